#!/usr/bin/env python3
# The digest kcopy --checksum prints, computed independently with the
# xxhash module (Debian's python3-xxhash), as kcopy(1) defines it:
#   checksum-ref.py FILE [START COUNT]   (512-byte sectors)
# prints "xxh3-64-blocks:HEX".
import struct
import sys

import xxhash

BLOCK = 65536
path = sys.argv[1]
start = int(sys.argv[2]) * 512 if len(sys.argv) > 2 else 0
with open(path, 'rb') as f:
    f.seek(0, 2)
    end = f.tell()
    if len(sys.argv) > 3:
        end = start + int(sys.argv[3]) * 512
    f.seek(start)
    digest = xxhash.xxh3_64(seed=0)
    left = end - start
    while left:
        block = f.read(min(BLOCK, left))
        assert block, 'short read'
        left -= len(block)
        digest.update(struct.pack('<Q', xxhash.xxh3_64_intdigest(block)))
print('xxh3-64-blocks:' + digest.hexdigest())
