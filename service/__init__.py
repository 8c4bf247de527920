"""The online half of the project: the daily deep-momentum signal service.

Every session close the service turns the day's closes into vol-scaled target positions with
the promoted ONNX model, stores them durably and exactly once, and keeps a paper track record.

Modules
-------
config
    :class:`~service.config.Settings` (environment variables ``MOMENTUM_*`` and a ``.env``
    file) and :func:`~service.config.load_settings`.
calendar
    Exchange-calendar helpers (sessions, closes) on top of ``exchange_calendars``.
store
    The SQLAlchemy Core schema (closes, positions, cycle runs, model loads, paper ledger) and
    the functions that read and write it; SQLite by default, PostgreSQL by URL.
ingest
    Validation and storage of closes from a batch, a file or the embedded-data replayer.

The service computes features with :mod:`momentum` and runs models with onnxruntime; it must
never import torch or :mod:`training` (a test checks ``sys.modules``).
"""
