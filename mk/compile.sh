#!/bin/sh
# compile: runs one compile command (everything after SRC) and, only when it fails, says
# which include paths SRC's folder may use, because the usual cause of a "No such file"
# there is a header included across the layering (Makefile header, INC_<folder>).
# Usage: sh mk/compile.sh SRC COMPILER ARGS...
src=$1; shift
"$@" && exit 0
rc=$?
incs=$(for a in "$@"; do case $a in -I/*) ;; -I*) printf ' %s' "$a" ;; esac; done)
echo "$src: not compiled (if a header was not found: ${src%%/*}/ may include only$incs; layering: Makefile header)" >&2
exit $rc
