"""Signals and blocking calls: Ctrl-C ends a wait on the main thread (pasyn::InterruptScope,
python/src/common.hpp SignalWatch), no other signal does, and handlers run once the call is over.
Each scenario runs in a fresh interpreter, so that its signals reach that process, not pytest's.
"""
import os
import signal
import subprocess
import sys
import threading

import pytest

import pasyn_sqlite_core as core


def run_script(script, *args):
    """Runs `script` with `args` in a new interpreter; its output, for the assertions."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=120)


def test_join_is_interrupted_by_a_signal(db_path):
    server = core.start_writer_server(db_path)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    guard = threading.Timer(5, server.shutdown)  # without the slices join() would never return
    guard.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            server.join()
        assert server.running
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        guard.cancel()
        server.stop()


def test_ctrl_c_ends_a_blocking_write_or_begin_at_once(tmpdir_path):
    # A write waiting behind another client's transaction, and a begin_exclusive() waiting for
    # it: Ctrl-C ends each within its 50 ms check, long before the 30 s lock wait (or the 60 s
    # idle timeout of the transaction) would. Before, the signal was seen only when the call
    # returned (here: TimeoutError after 30 s).
    script = """
import os, signal, sys, threading, time
import pasyn_sqlite_core as core
with core.start_writer_server(sys.argv[1], lock_wait=30.0, transaction_idle_timeout=60.0) as server:
    holder = core.MultiplexedClient(server.socket_path)
    holder.executescript("CREATE TABLE t (x)")
    tx = holder.begin_exclusive()
    c = core.MultiplexedClient(server.socket_path)
    for call in (lambda: c.execute("INSERT INTO t VALUES (1)"), c.begin_exclusive):
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            call()
            print("returned")
        except KeyboardInterrupt:
            print("KeyboardInterrupt", "before the lock wait" if time.monotonic() - started < 5
                  else "after the lock wait or the idle timeout")
        except BaseException as e:
            print(type(e).__name__, e)
    tx.execute("INSERT INTO t VALUES (2)")  # the holder's transaction is untouched
    tx.commit()
    print(c.execute("INSERT INTO t VALUES (3)"))  # the interrupted client goes on
    # The interrupted INSERT's outcome was unknown: it ran once the transaction ended.
    print(holder.execute_fetchall("SELECT x FROM t ORDER BY rowid"))
"""
    out = run_script(script, os.path.join(tmpdir_path, "c.db"))
    assert out.stdout.splitlines() == [
        "KeyboardInterrupt before the lock wait",
        "KeyboardInterrupt before the lock wait",
        "1",
        "[(2,), (1,), (3,)]",
    ], out.stdout + out.stderr


def test_ctrl_c_ends_a_blocking_write_in_a_child_forked_from_another_thread(tmpdir_path):
    # The child's main thread is the one that forked (Python runs its signal handlers there):
    # the binding notes it again after fork, or Ctrl-C waited for the call there (review22).
    script = """
import os, signal, sys, threading, time
import pasyn_sqlite_core as core
server = core.start_writer_server(sys.argv[1], lock_wait=30.0, transaction_idle_timeout=60.0)
holder = core.MultiplexedClient(server.socket_path)
holder.executescript("CREATE TABLE t (x)")
tx = holder.begin_exclusive()

def fork_here():
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        c = core.MultiplexedClient(server.socket_path)
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            c.execute("INSERT INTO t VALUES (1)")
            print("returned", flush=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", time.monotonic() - started < 5, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)

forker = threading.Thread(target=fork_here)
forker.start()
forker.join()
tx.rollback()
server.stop()
"""
    out = run_script(script, os.path.join(tmpdir_path, "f.db"))
    assert out.stdout.strip() == "KeyboardInterrupt True", out.stdout + out.stderr


def test_other_signals_do_not_end_a_wait_and_their_handlers_run_after_it(tmpdir_path):
    # Only SIGINT ends a wait; no Python code runs inside it (a handler that closed the client
    # or ended the thread's transaction there would free what the waiting call uses: review22).
    # A SIGALRM handler that uses the same client runs once the call has returned.
    script = """
import os, signal, sys, threading, time
import pasyn_sqlite_core as core
with core.start_writer_server(sys.argv[1], lock_wait=30.0, transaction_idle_timeout=60.0) as server:
    holder = core.MultiplexedClient(server.socket_path)
    holder.executescript("CREATE TABLE t (x)")
    tx = holder.begin_exclusive()
    c = core.MultiplexedClient(server.socket_path)
    events = []
    signal.signal(signal.SIGALRM, lambda *args: events.append(("alarm", c.ping())))
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    threading.Timer(0.8, tx.commit).start()
    print(c.execute("INSERT INTO t VALUES (1)"))
    time.sleep(0.05)
    print(events)
    # Ctrl-C with a handler that does not raise: the wait ends, its outcome unknown.
    tx2 = holder.begin_exclusive()
    signal.signal(signal.SIGINT, lambda *args: events.append("sigint"))
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        c.execute("INSERT INTO t VALUES (2)")
        print("returned")
    except core.OperationalError as e:
        print(type(e).__name__, "interrupted" in str(e), events[-1])
    tx2.rollback()
"""
    out = run_script(script, os.path.join(tmpdir_path, "h.db"))
    assert out.stdout.splitlines() == [
        "1",
        "[('alarm', True)]",
        "OperationalError True sigint",
    ], out.stdout + out.stderr


def test_ctrl_c_during_a_call_that_fails_raises_keyboard_interrupt(tmpdir_path):
    # The failed call's exception was built by Python code while the signal was pending:
    # KeyboardInterrupt came out as a RuntimeError holding its traceback.
    script = """
import os, signal, sys, threading
import pasyn_sqlite_core as core
with core.start_writer_server(sys.argv[1], lock_wait=1.0) as server:
    holder = core.MultiplexedClient(server.socket_path)
    holder.executescript("CREATE TABLE t (x)")
    tx = holder.begin_exclusive()
    c = core.MultiplexedClient(server.socket_path)
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        c.execute("INSERT INTO t VALUES (1)")  # waits for tx, then TimeoutError
        print("returned")
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    except BaseException as e:
        print(type(e).__name__)
    tx.rollback()
"""
    out = run_script(script, os.path.join(tmpdir_path, "i.db"))
    assert out.stdout.strip() == "KeyboardInterrupt", out.stdout + out.stderr
