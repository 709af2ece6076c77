"""What the scripts that run tessera under mpirun share: their arguments and work
directory, the sample image, stopping a job once it has stored blocks in its cache, and
the TAP report."""
import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def setup(prefix):
    """(args, tessera's absolute path, an empty work dir, the sample's sky.fits), or None
    after printing a TAP skip (no mpirun, or no sample)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    if not os.access(a.mpirun, os.X_OK):
        print("1..0 # SKIP no mpirun at %s" % a.mpirun)
        return None
    t = os.path.abspath(a.tessera)
    work = a.workdir or tempfile.mkdtemp(prefix=prefix)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    r = run([t, "sample", work])
    if r.returncode != 0:
        print("1..0 # SKIP cannot make the sample: %s" % r.stderr.strip())
        return None
    return a, t, work, os.path.join(work, "sky.fits")


def kill_when_stored(cmd, cache, n_blocks):
    """Start cmd (an mpirun job) and SIGKILL its process group once `cache` holds
    n_blocks files.  (killed before it ended, blocks stored when stopped)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    stored, t0 = 0, time.time()
    while p.poll() is None and time.time() - t0 < 120:
        stored = sum(len(fs) for d, _, fs in os.walk(cache) if not d.endswith("tmp"))
        if stored >= n_blocks:
            break
        time.sleep(0.01)
    killed = p.poll() is None
    if killed:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return killed, stored


def report(results, work):
    """Print results [(ok, name, detail)] as TAP; remove work if all passed.  The exit
    status."""
    print("1..%d" % len(results))
    nfail = 0
    for i, (ok, name, detail) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok:
            nfail += 1
            for line in detail.splitlines():
                print("# " + line)
    if not nfail:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if nfail else 0
