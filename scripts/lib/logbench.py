"""Runs a log tool with its output to /dev/null and reports what it cost.

    python3 logbench.py NAME EXPECTED_LINES -- COMMAND...

Prints lines/s, wall seconds, CPU seconds (user + system) and the peak
resident set size, from wait4(2)'s rusage of that one process, and appends
them as a JSON line to the file $RESULTS.
Lines are counted in a separate run through a pipe (counting must not add to
the measured run); the timed run writes to /dev/null as the benchmark asks.
"""
import json
import os
import subprocess
import sys
import time


def timed(argv):
    with open(os.devnull, "wb") as null:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def count(argv):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    out = done.stdout
    return out.count(b"\n")


def main():
    name, expected = sys.argv[1], int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    if os.environ.get("COUNT") == "1":
        lines = count(argv)
        if lines != expected:
            sys.exit(f"{name} printed {lines} lines, expected {expected}")
        return
    wall, cpu, rss = timed(argv)
    row = {"name": name, "wall": wall, "cpu": cpu, "rss_mib": rss, "lines": expected}
    with open(os.environ["RESULTS"], "a") as results:
        results.write(json.dumps(row) + "\n")
    print(f"{os.environ.get('LABEL', '')}{name:>7}: {expected / wall:>10,.0f} lines/s  "
          f"{wall:6.2f} s  CPU {cpu:5.2f} s  max RSS {rss:6.1f} MiB")


if __name__ == "__main__":
    main()
