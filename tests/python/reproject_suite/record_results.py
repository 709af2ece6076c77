"""pytest in a subprocess, its results recorded per test, for run_suite.py.

run_pytest() runs pytest with this module as a plugin (-p record_results
--tap-results FILE: one JSON object per test: id, outcome, message), its own
output going to a log; other plugins add fields to the records through START
and EXTRA (tessera_reproject_plugin adds the substituted functions called).
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# Other plugins' callables: START ones are called with each test item before
# it runs, EXTRA ones after, returning fields to add to its record.
START = []
EXTRA = []


class Recorder:
    """pytest hooks writing one JSON line per test: id, outcome (passed,
    failed, skipped), message (the failure's report or the skip reason), and
    the EXTRA fields."""

    def __init__(self, path):
        self.out = open(path, 'w', encoding='utf-8')
        self.current = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        for fn in START:
            fn(item)
        self.current[item.nodeid] = {'id': item.nodeid, 'outcome': 'passed', 'message': ''}
        yield
        res = self.current.pop(item.nodeid)
        for fn in EXTRA:
            res.update(fn(item))
        self.out.write(json.dumps(res) + '\n')
        self.out.flush()

    def pytest_runtest_logreport(self, report):
        res = self.current.get(report.nodeid)
        if res is None:
            return
        if report.failed:
            if res['outcome'] != 'failed':
                res['outcome'] = 'failed'
                text = str(report.longrepr) if report.longrepr is not None else ''
                res['message'] = ('(in %s) ' % report.when if report.when != 'call' else '') + \
                    text[-4000:]
        elif report.skipped and res['outcome'] == 'passed':
            res['outcome'] = 'skipped'
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                res['message'] = str(longrepr[2])
            else:
                res['message'] = str(longrepr)

    def pytest_unconfigure(self, config):
        self.out.close()


def pytest_addoption(parser):
    parser.getgroup('tap').addoption('--tap-results', default=None,
                                     help='write one JSON line per test to this file')


def pytest_configure(config):
    path = config.getoption('--tap-results')
    if path:
        config.pluginmanager.register(Recorder(path), 'tap_recorder')


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def tap_comment(text, limit=40):
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = ['...'] + lines[-limit:]
    return '\n'.join('#   ' + ln for ln in lines)


def report_no_tests(rc, log):
    """TAP for a pytest run that recorded no test (it could not collect or
    start): one failing line and the log's end; returns exit status 1."""
    print('1..1')
    print('not ok 1 - pytest ran no test (exit status %d); log: %s' % (rc, log))
    with open(log, encoding='utf-8') as f:
        print(tap_comment(f.read()))
    return 1


def run_pytest(args, log, results, env=None, cwd=None):
    """pytest `args` in a subprocess with the recorder, output to `log`;
    returns (exit status, results)."""
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join([HERE] + [p for p in [env.get('PYTHONPATH')] if p])
    cmd = [sys.executable, '-m', 'pytest', '-p', 'record_results', '-p', 'no:cacheprovider',
           '--tap-results', results] + list(args)
    with open(log, 'w', encoding='utf-8') as f:
        rc = subprocess.call(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    return rc, read_results(results)
