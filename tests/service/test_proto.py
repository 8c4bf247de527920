"""The committed gRPC stubs are exactly what `make proto` generates from proto/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    written = _generator().generate(tmp_path / "_proto")
    committed = ROOT / "service" / "_proto"
    assert sorted(p.name for p in written) == sorted(p.name for p in committed.glob("*.py*"))
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), (
            f"service/_proto/{path.name} differs from proto/: run `make proto`"
        )


def test_stubs_import_as_one_package_without_shadowing_momentum():
    from service._proto import signals_pb2, signals_pb2_grpc

    assert signals_pb2.DESCRIPTOR.package == "momentum.v1"
    assert "SignalService" in signals_pb2.DESCRIPTOR.services_by_name
    assert signals_pb2_grpc.SignalServiceStub is not None
    import momentum

    assert Path(momentum.__file__).parent == ROOT / "momentum"
