#!/bin/sh
# ha-shell: command server on the console for host-driven tests
# (tools/hyperalloc/vm.py, Guest.shell). Reads command lines from stdin
# without echo, runs each in this shell and prints "@@RC=<exit status>"
# after it. A shell reading a pipe or a tty with line editing would hold
# back output or echo the input.
stty -echo 2>/dev/null
echo '@@SHELL-READY'
while IFS= read -r line; do
	eval "$line"
	printf '@@RC=%d\n' $?
done
