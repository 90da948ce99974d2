"""mdlmap: a client for mdlmap-hostd's host API (Unix socket, protobuf framing).

    import mdlmap
    with mdlmap.Client("/run/mdlmap/api.sock") as c:
        for m in c.list():
            print(m.vm_name, hex(m.guest_address), c.read(m.map_handle, 0, 16))

The protobuf module (mdlmap_pb2) is generated from proto/mdlmap.proto at build
time; it is found next to this package or on sys.path.
"""
from .client import Client, MdlmapError, RamRegion, pb, status_name  # noqa: F401

__all__ = ["Client", "MdlmapError", "RamRegion", "pb", "status_name"]
