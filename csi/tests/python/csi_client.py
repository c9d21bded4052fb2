"""Calls the CSI plugin on the Unix socket argv[1] with gRPC C-core's Python
client (grpcio), as users' scripts and debug tools do: raw method paths and
hand-encoded protobuf, so no generated code is needed.

Prints one line per call: <label> TAB ok TAB <value>, or
<label> TAB error TAB <status code> TAB <details>.
"""

import sys

import grpc


def fields(message):
    """The length-delimited fields of a protobuf message: {number: bytes}."""
    out, i = {}, 0
    while i < len(message):
        key, i = varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(message, i)
        elif wire == 2:
            size, i = varint(message, i)
            out[number] = message[i : i + size]
            i += size
        else:
            raise ValueError(f"wire type {wire}")
    return out


def varint(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def call(socket, method, request=b"", authority=None):
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(f"unix://{socket}", options=options) as channel:
        stub = channel.unary_unary(
            method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        return stub(request, timeout=10)


def main():
    socket = sys.argv[1]
    calls = [
        # grpcio's own choice (the percent-encoded path since gRPC 1.57).
        ("default", "/csi.v1.Identity/GetPluginInfo", None, 1),
        ("percent-encoded", "/csi.v1.Identity/GetPluginInfo", socket.lstrip("/").replace("/", "%2F"), 1),
        # grpc-java's: the path itself.
        ("path", "/csi.v1.Node/NodeGetInfo", socket, 1),
        ("localhost", "/csi.v1.Node/NodeGetInfo", "localhost", 1),
        # An error status reaches the client too: no volume_id.
        ("publish", "/csi.v1.Node/NodePublishVolume", None, None),
    ]
    for label, method, authority, field in calls:
        try:
            response = call(socket, method, authority=authority)
            value = fields(response).get(field, b"").decode() if field else ""
            print(f"{label}\tok\t{value}")
        except grpc.RpcError as e:
            print(f"{label}\terror\t{e.code().name}\t{e.details()}")


if __name__ == "__main__":
    main()
