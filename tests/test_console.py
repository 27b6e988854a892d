"""The `dem-gateway` console script as an ops person runs it on the server."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "dem-gateway")


def console(tmp_path, *args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    clean.update(env)
    return subprocess.run([SCRIPT, *args], env=clean, capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


def test_console_script_runs_commands_with_the_named_config(tmp_path):
    done = console(tmp_path, "init-db", GATEWAY_CONFIG=os.path.join(ROOT, "config.sandbox.py"),
                   GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/c.sqlite3")
    assert done.returncode == 0, done.stderr
    assert "schema ready" in done.stdout


def test_bad_config_is_one_sentence_and_exit_2(tmp_path):
    done = console(tmp_path, "payments", "list",
                   GATEWAY_CONFIG=os.path.join(ROOT, "config.example.py"),
                   GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/c.sqlite3")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "dem-gateway: bad configuration: Set SECRET_KEY to a value of your own, "
        "not the example's."]
