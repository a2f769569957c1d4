"""Rendering on every core gives the bytes rendering on one gives, whatever happens to the forked processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import cli_env, snapshot, write_article, write_config

SCRIPT = """
import functools, json, os, sys
from publisher.stages import render_pool

def job(index):
    if index == int(sys.argv[1]):
        raise ValueError(f"job {index} failed")
    return index * index, os.getpid()

jobs = [functools.partial(job, index) for index in range(60)]
try:
    results = render_pool.run_jobs(jobs, workers=3)
except ValueError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"values": [value for value, _ in results], "pids": len({pid for _, pid in results})}))
"""


def run_script(failing: int) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(failing)], env=cli_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_jobs_run_in_several_processes_and_come_back_in_order():
    result = run_script(failing=-1)
    assert result["values"] == [index * index for index in range(60)]
    assert result["pids"] == 3  # this process and two forked ones each rendered a share


def test_a_job_that_fails_in_a_forked_process_fails_here_too():
    # Job 1 falls to the first forked process: it fails there, and again when this process takes the share
    # over, so the error is raised here as if the job had run here.
    assert run_script(failing=1) == {"error": "job 1 failed"}


def test_a_cold_build_on_every_core_gives_the_bytes_of_one_core(tmp_path):
    for index in range(80):  # 40 topics besides AI: enough feeds to render in several processes
        write_article(tmp_path / "store", f"a{index:02d}.md", topics=["AI", f"Topic {index % 40}"],
                      publishedDateTime=f"2024-01-{index % 28 + 1:02d}T03:04:05Z")
    config = write_config(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from publisher.stages import render_pool
        from publisher.build import build
        from publisher.config import load_config
        if sys.argv[1] == "one":
            render_pool.PARALLEL_FROM = 10**9
        config = load_config(Path({str(config)!r}), {{"output": Path(sys.argv[2]), "state": Path(sys.argv[3])}})
        report = build(config)
        assert report.ok and len(report.feeds) == 42, report.summary()  # all, AI and 40 topics
    """)
    outputs = {}
    for mode in ("one", "every"):
        out, state = tmp_path / f"out-{mode}", tmp_path / f"state-{mode}"
        done = subprocess.run([sys.executable, "-c", script, mode, str(out), str(state)], env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs[mode] = {name: data for name, (data, _) in snapshot(out).items()}
    assert len(outputs["one"]) > 42 * 3 and outputs["every"] == outputs["one"]
