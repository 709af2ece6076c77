"""A long computation for test_signals.py: prints "ready" and the number of
its threads, computes, and on KeyboardInterrupt prints "interrupted", its
threads, its child processes and when it caught the exception."""
import os
import sys
import time

import numpy as np
from astropy.wcs import WCS

import tessera


def tan(shape, scale, crval=(150.0, 2.0), rot=0.0):
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = list(crval)
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    return w


executor = sys.argv[1]
data = np.random.default_rng(0).random((2048, 2048))
R = tessera.reproject(tessera.from_array(data, tan((2048, 2048), 1e-4)), tan((2048, 2048), 1.1e-4, rot=30),
                      shape_out=(2048, 2048), method='exact', block=(128, 128))
t0 = time.monotonic()
if len(sys.argv) > 2:  # time it: python3 interrupt_me.py threads time
    R.compute(jobs=2, executor=executor)
    print('took', time.monotonic() - t0)
    sys.exit()
print('ready', len(os.listdir('/proc/self/task')), flush=True)
try:
    R.compute(jobs=2, executor=None if executor == 'default' else executor)
    print('finished', flush=True)
except KeyboardInterrupt:
    caught = time.monotonic()    # CLOCK_MONOTONIC: comparable with the parent's clock

    def parent(pid):
        try:
            with open(f'/proc/{pid}/stat') as f:
                return int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError):   # gone meanwhile
            return None
    kids = [p for p in os.listdir('/proc') if p.isdigit() and parent(p) == os.getpid()]
    print('interrupted', len(os.listdir('/proc/self/task')), len(kids), caught, flush=True)
