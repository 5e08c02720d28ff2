"""The one safetensors writer of the golden scripts: byte-for-byte reproducible output.

safetensors' own writer orders the header JSON through a hash map, so two runs give different
bytes; here tensors and header keys are sorted, so regenerating with no change to the cases
gives an identical file (and a clean `git diff`). Every script in this folder imports it
(`from golden_io import write_safetensors`; the script's folder is on `sys.path`).
"""

import json

import torch
from safetensors import safe_open

ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.uint8: "U8", torch.int8: "I8"}


def write_safetensors(path, tensors, metadata):
    """Writes `tensors` (name -> CPU tensor) and the string map `metadata` to `path`, sorted,
    then reads the file back with the safetensors library and checks every tensor bytewise."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()  # little-endian
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for b in blobs:
            f.write(b)
    with safe_open(path, "pt") as f:
        assert f.metadata() == dict(metadata), path
        for name, t in tensors.items():
            # Bytes, not values: NaN (the CTC goldens have some) equals itself here.
            got = f.get_tensor(name).contiguous().view(-1).view(torch.uint8)
            assert torch.equal(got, t.contiguous().view(-1).view(torch.uint8)), name
