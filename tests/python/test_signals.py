"""Ctrl-C during a computation: KeyboardInterrupt promptly, nothing left
running (no engine thread, no worker process)."""
import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), 'scripts', 'interrupt_me.py')


@pytest.mark.parametrize('executor', ['default', 'threads', 'processes'])
def test_ctrl_c_interrupts_a_computation_promptly(executor):
    p = subprocess.Popen([sys.executable, SCRIPT, executor], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        assert line and line[0] == 'ready', p.stderr.read()
        threads_before = int(line[1])
        time.sleep(0.4)              # the engine is running (the whole takes seconds)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    words = out.split()
    assert words[:1] == ['interrupted'], out + err
    # The engine stops between blocks (tens of ms each here); the bound
    # leaves room for a loaded machine.
    elapsed = float(words[3]) - sent
    assert elapsed < 2.0, f'{elapsed:.2f} s from SIGINT to KeyboardInterrupt'
    assert int(words[1]) == threads_before, 'engine threads left running'
    assert int(words[2]) == 0, 'worker processes left behind'
