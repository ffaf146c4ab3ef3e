#!/usr/bin/env bash
# The test of the same name one directory up, with dev/NAME I/O through
# the daemon (--no-passthrough) instead of FUSE passthrough.
export KCOPYDFS_OPTS=--no-passthrough
exec bash "$abs_srcdir/$(basename "$0")"
