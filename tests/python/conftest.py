"""Fixtures of the Python tests, and the TAP output meson counts.

With TESSERA_TAP=1 (as meson runs them; pytest's own terminal output is
off then) each test prints one TAP line, "ok N - name" or "not ok N - name",
with the failure as "#" comment lines, and the plan "1..N" first.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

TAP = os.environ.get('TESSERA_TAP') == '1'


class _Tap:
    def __init__(self):
        self.n = 0
        self.outcomes = {}

    def emit(self, line):
        sys.stdout.write(line + '\n')
        sys.stdout.flush()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        self.emit(f'1..{len(session.items)}')

    def pytest_collectreport(self, report):
        if report.failed:
            self.emit('Bail out! collection failed: ' + str(report.nodeid))
            for line in str(report.longrepr).splitlines():
                self.emit('# ' + line)

    def pytest_runtest_logreport(self, report):
        o = self.outcomes.setdefault(report.nodeid, {'failed': None, 'skipped': None})
        if report.failed and o['failed'] is None:
            o['failed'] = f'{report.when}: {report.longrepr}'
        elif report.skipped and o['skipped'] is None:
            o['skipped'] = report.longrepr[2] if isinstance(report.longrepr, tuple) else 'skipped'

    def pytest_runtest_logfinish(self, nodeid, location):
        self.n += 1
        o = self.outcomes.pop(nodeid, {'failed': None, 'skipped': None})
        name = nodeid.split('::', 1)[-1]
        if o['failed']:
            self.emit(f'not ok {self.n} - {name}')
            for line in o['failed'].splitlines()[-40:]:
                self.emit('# ' + line)
        elif o['skipped']:
            self.emit(f'ok {self.n} - {name} # SKIP {o["skipped"]}')
        else:
            self.emit(f'ok {self.n} - {name}')


def pytest_addoption(parser):
    # meson runs pytest with its terminal plugin off (stdout is TAP only);
    # assertion messages still read the option it would have registered.
    try:
        parser.addoption('-v', '--verbose', action='count', dest='verbose', default=0)
    except ValueError:
        pass   # the terminal plugin has it


def pytest_configure(config):
    if TAP:
        config.pluginmanager.register(_Tap(), 'tessera-tap')


# ---------------------------------------------------------------------------
# Fixtures

def tan_wcs(crval=(150.0, 2.0), shape=(64, 80), scale=1e-3, rot=0.0, crpix=None):
    """A TAN WCS for an image of numpy shape `shape`, pixel_shape set."""
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = list(crval)
    ny, nx = shape
    w.wcs.crpix = list(crpix) if crpix is not None else [nx / 2 + 0.5, ny / 2 + 0.5]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    w.pixel_shape = (nx, ny)
    return w


def header_of(w, shape):
    h = w.to_header(relax=True)
    h['NAXIS'] = 2
    h['NAXIS1'] = shape[1]
    h['NAXIS2'] = shape[0]
    return h


def write_fits(path, data, w=None):
    from astropy.io import fits
    h = w.to_header(relax=True) if w is not None else None
    fits.PrimaryHDU(data, header=h).writeto(path, overwrite=True)
    return str(path)


@pytest.fixture
def sky():
    """A smooth sky with structure (float64, 64 x 80), its WCS, a target."""
    rng = np.random.default_rng(42)
    y, x = np.mgrid[0:64, 0:80]
    data = np.sin(x / 7.0) * np.cos(y / 5.0) * 10 + rng.normal(0, 0.1, (64, 80)) + 20
    w = tan_wcs()
    target = tan_wcs(crval=(150.004, 2.003), shape=(50, 60), scale=1.1e-3, rot=25)
    return data, w, target


@pytest.fixture
def cli():
    exe = os.environ.get('TESSERA_CLI')
    if not exe or not os.path.exists(exe):
        pytest.skip('the tessera CLI is not built (TESSERA_CLI)')

    def run(*args):
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError(f'tessera {" ".join(map(str, args))}: {r.stderr}')
        return r
    return run
