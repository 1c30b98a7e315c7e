#!/usr/bin/env python3
"""Crash test driver: runs the tsdb crash writer, SIGKILLs it at random moments (>= 20
rounds), and after each kill runs the verifier (every acknowledged sample present, nothing
invented). Alternates fsync=interval and fsync=always: at least 20 kills under each policy
(40 rounds); rounds beyond that (CRASH_ROUNDS) only while within the time budget."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIN_ROUNDS = 40


def main():
    writer = sys.argv[1]
    rounds = int(os.environ.get("CRASH_ROUNDS", str(MIN_ROUNDS)))
    seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
    rnd = random.Random(seed)
    d = tempfile.mkdtemp(prefix="tsdb-crash-")
    print(f"crash test: {rounds} rounds, seed {seed}, dir {d}", flush=True)
    deadline = time.time() + 150
    try:
        for r in range(rounds):
            # At least 20 kills per fsync policy: the time budget only trims extra rounds.
            if r >= MIN_ROUNDS and time.time() > deadline:
                print(f"time budget reached after {r} rounds; stopping", flush=True)
                break
            p = subprocess.Popen([writer, "write", d, str(r), str(r % 2)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rnd.uniform(0.2, 1.2))
            early = p.poll()
            if early is not None:
                print(p.stderr.read().decode(errors="replace"))
                print(f"round {r}: writer exited early with {early}")
                return 1
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            p.stderr.close()
            v = subprocess.run([writer, "verify", d], capture_output=True, text=True, timeout=120)
            sys.stdout.write(f"round {r}: " + v.stdout)
            if v.returncode != 0:
                sys.stdout.write(v.stderr[-4000:])
                print(f"round {r}: verification FAILED (seed {seed})")
                return 1
        print("crash test passed")
        return 0
    finally:
        shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
