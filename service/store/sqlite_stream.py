"""Stream a SQLite store's closes to stdout as Arrow IPC: the child of a bulk read.

    python -P sqlite_stream.py DATABASE START END FIRST LAST ROWS

`DATABASE` is a SQLite file, `START`/`END` inclusive ISO dates or empty strings (no
bound), `FIRST`/`LAST` the inclusive range of ``closes.rowid`` to scan, `ROWS` the rows
per record batch. The stream's schema is `SCHEMA`: the day as days since 2000-01-01, the
ticker, the close. Errors go to stderr with exit status 1.

`service.store.price_reads.read_closes(..., bulk=True)` runs this file as a script in a
child process. The ADBC SQLite driver reads rows straight into Arrow columns in C (about
3x faster than the `sqlite3` module, which builds three Python objects a row), but it
links a SQLite library of its own. Two SQLite libraries must never open one database
file in the same process: POSIX locks belong to the process, so when one library closes
its file descriptor the kernel also drops the locks the other library holds on that
file, and a writer elsewhere may then checkpoint over pages a reader still uses. A
separate process is the case SQLite's locking is built for. The script imports only
pyarrow and the driver, so that the child starts in a fraction of a second.
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema(
    [
        pa.field("day", pa.int32(), nullable=False),
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
    ]
)

_EPOCH_DAYS = 10_957  # 2000-01-01 as days since 1970-01-01 (date32's origin)


def stream(database: str, start: str, end: str, first: int, last: int, rows: int) -> None:
    """Write the closes of rowids `first`..`last` between `start` and `end` (inclusive,
    "" = open) to stdout."""
    import adbc_driver_sqlite.dbapi as adbc  # here: a missing driver reads as an error

    # A bulk read wants most of the table: the rowid range is scanned in storage order, and
    # the unary + keeps SQLite from walking the (date, ticker) index instead, which would
    # fetch every row by a look-up of its own.
    where = ["rowid BETWEEN ? AND ?"]
    params: list[int | str] = [first, last]
    if start:
        where.append("+date >= ?")
        params.append(start)
    if end:
        where.append("+date <= ?")
        params.append(end)
    sql = "SELECT date, ticker, close FROM closes WHERE " + " AND ".join(where)
    with (
        adbc.connect(database) as connection,
        connection.cursor() as cursor,
        pa.ipc.new_stream(sys.stdout.buffer, SCHEMA) as writer,
    ):
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(rows)})
        cursor.execute(sql, params)
        for batch in cursor.fetch_record_batch():
            if batch.num_rows == 0:
                continue
            # the store writes DATE as ISO text; date32 parses it in C and refuses anything else
            days = pc.subtract(batch.column(0).cast(pa.date32()).cast(pa.int32()), _EPOCH_DAYS)
            tickers = batch.column(1).cast(pa.string())
            closes = batch.column(2).cast(pa.float64())
            writer.write_batch(pa.record_batch([days, tickers, closes], schema=SCHEMA))


def main(argv: list[str]) -> int:
    if len(argv) != 7:
        print("usage: sqlite_stream.py DATABASE START END FIRST LAST ROWS", file=sys.stderr)
        return 2
    try:
        stream(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    except Exception as exc:  # the parent shows this line in its error
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
