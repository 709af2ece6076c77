#!/usr/bin/python3
"""Run pytest and print one TAP line per test (meson's protocol: 'tap').

    tap_pytest.py [--log FILE] [pytest arguments...]

pytest's own output goes to the log (default: a file in $TMPDIR); stdout
carries only TAP: the plan, "ok N - test id" / "not ok N - test id" (with the
failure's last lines as # comments), "ok N - id # SKIP reason", and a
summary comment.  Exit status 1 if a test failed or pytest could not run.

The module is also the pytest plugin that records the results
(-p tap_pytest --tap-results FILE: one JSON object per test); other plugins
add fields to the records through START and EXTRA.
"""
import json
import os
import subprocess
import sys
import tempfile

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
    cmd = [sys.executable, '-m', 'pytest', '-p', 'tap_pytest', '-p', 'no:cacheprovider',
           '--tap-results', results] + list(args)
    with open(log, 'w', encoding='utf-8') as f:
        rc = subprocess.call(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    return rc, read_results(results)


def main(argv):
    log = None
    if argv[:1] == ['--log']:
        log, argv = argv[1], argv[2:]
    workdir = tempfile.mkdtemp(prefix='tessera-pytest-')
    log = log or os.path.join(workdir, 'pytest.log')
    rc, tests = run_pytest(['-q'] + argv, log, os.path.join(workdir, 'results.jsonl'))
    if not tests:
        return report_no_tests(rc, log)
    print('1..%d' % len(tests))
    failed = 0
    for i, t in enumerate(tests, 1):
        if t['outcome'] == 'passed':
            print('ok %d - %s' % (i, t['id']))
        elif t['outcome'] == 'skipped':
            print('ok %d - %s # SKIP %s' % (i, t['id'], t['message'].strip()[:200]))
        else:
            failed += 1
            print('not ok %d - %s' % (i, t['id']))
            print(tap_comment(t['message']))
    print('# %d tests, %d failed (pytest exit status %d); log: %s'
          % (len(tests), failed, rc, log))
    # pytest's status 1 is "some tests failed"; other non-zero ones mean it
    # could not run them all (collection or internal errors).
    return 1 if failed or rc not in (0, 1, 5) else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
