"""The overhead harnesses run and measure every configuration they are given.

Timing is not asserted here (that is what the harness is for); only that it works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from apps.helpers import REPO_DIR, clean_env


def run_bench(script: str, *args: str, cwd=None, timeout: float = 120):
    """``python bench/<script> <args>`` with a clean environment, output captured."""
    return subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / script), *args],
        env=clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_inprocess_harness_reports_each_configuration_against_otel(tmp_path) -> None:
    result = run_bench(
        "inprocess.py",
        "--configs",
        "wpm,wpm_precise,bare",
        "--rounds",
        "1",
        "--calls",
        "20",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    measured = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert measured == ["otel", "wpm", "wpm_precise", "bare"]
    assert "us/request" in result.stdout


@pytest.mark.parametrize(
    ("option", "unit"), [(("--child-spans", "5"), "us/request"), (("--outside",), "us/span")]
)
def test_inprocess_harness_measures_spans_in_and_outside_requests(
    tmp_path, option: tuple[str, ...], unit: str
) -> None:
    result = run_bench("inprocess.py", "--rounds", "1", "--calls", "20", *option, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    measured = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert measured == ["otel", "wpm"] and unit in result.stdout
    refused = run_bench("inprocess.py", "--configs", "bare", *option, cwd=tmp_path)
    assert refused.returncode == 2 and "bare has no tracer" in refused.stderr


def test_inprocess_harness_rejects_an_unknown_configuration(tmp_path) -> None:
    result = run_bench("inprocess.py", "--configs", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown config 'nope'" in result.stderr


def run_throughput(tmp_path, *args: str):
    """``bench/run.py`` with ``args`` and ``--json``; its output and the saved run."""
    out = tmp_path / "run.json"
    result = run_bench("run.py", *args, "--json", str(out), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads(out.read_text())


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (.ci/run installs it)")
def test_throughput_harness_measures_bursts_of_each_configuration_against_otel(tmp_path) -> None:
    stdout, data = run_throughput(
        tmp_path,
        *("--configs", "otel,wpm", "--endpoints", "/fast", "--reps", "1"),
        *("--duration", "2", "--bursts", "2", "--warmup", "1"),
    )
    samples = {sample["config"]: sample for sample in data["samples"]}
    assert set(samples) == {"otel", "wpm"}
    for sample in samples.values():
        assert len(sample["burst_rps"]) == 2
        assert sample["rps"] == sum(sample["burst_rps"]) / 2  # the median of two
        assert (sample["non_2xx"], sample["socket_errors"]) == (0, {})
    assert samples["wpm"]["wpm"]["total_requests"] >= samples["wpm"]["requests"]
    assert data["summary"]["/fast"]["configs"]["otel"]["ratio_vs_baseline"]["median"] == 1.0
    assert "| wpm |" in stdout


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (.ci/run installs it)")
def test_asgi_harness_measures_uvicorn_servers_against_otel(tmp_path) -> None:
    out = tmp_path / "asgi.json"
    result = run_bench(
        "asgi.py",
        *("--configs", "otel,wpm,otel_noop", "--endpoints", "/io", "--reps", "1"),
        *("--duration", "1", "--bursts", "1", "--warmup", "1", "--json", str(out)),
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uvicorn, 1 process" in result.stdout
    data = json.loads(out.read_text())
    samples = {sample["config"]: sample for sample in data["samples"]}
    assert set(samples) == {"otel", "wpm", "otel_noop"}
    for sample in samples.values():
        assert (sample["non_2xx"], sample["socket_errors"]) == (0, {})
    assert samples["wpm"]["wpm"]["total_requests"] >= samples["wpm"]["requests"]
    assert data["issues"]["log_lines"] == []


def test_throughput_harness_rejects_bursts_wrk_cannot_run() -> None:
    result = run_bench("run.py", "--duration", "10", "--bursts", "3")
    assert result.returncode == 2
    assert "--bursts must be 1..100 and cut --duration into whole seconds" in result.stderr


WAYS_IN = [
    "import otel_wpm",
    "from otel_wpm import Config",
    "from otel_wpm import ProfilingSpanProcessor",
    "from otel_wpm import PerformanceMonitor",
    "opentelemetry-instrument hook",
    "the hook, OTEL_SDK_DISABLED=true",
]


def import_time_tables(output: str) -> dict[str, list[str]]:
    """{checkout: the ways in of its table, in order}."""
    tables = {}
    for block in output.split("\n\n")[1:]:
        lines = block.splitlines()
        if len(lines) > 1 and lines[1].startswith("way in"):
            tables[lines[0]] = [line.split("  ")[0] for line in lines[2:]]
    return tables


def test_import_time_measures_each_way_in_and_names_what_dominates(tmp_path) -> None:
    result = run_bench("import_time.py", "--runs", "1", "--top", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert import_time_tables(result.stdout) == {str(REPO_DIR): WAYS_IN}
    processor_section = result.stdout.split(f"{WAYS_IN[2]} (SDK loaded): heaviest parts")[1]
    assert "otel_wpm.config" in processor_section.split("\n\n")[0]


def test_import_time_compares_with_another_checkout(tmp_path) -> None:
    other = tmp_path / "other"
    shutil.copytree(REPO_DIR / "otel_wpm", other / "otel_wpm")
    result = run_bench("import_time.py", "--runs", "1", "--top", "1", "--against", str(other))
    assert result.returncode == 0, result.stdout + result.stderr
    assert import_time_tables(result.stdout) == {str(REPO_DIR): WAYS_IN, str(other): WAYS_IN}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (.ci/run installs it)")
def test_throughput_harness_serves_the_second_app_and_reads_cpu_per_request(tmp_path) -> None:
    stdout, data = run_throughput(
        tmp_path,
        *("--app", "shop", "--configs", "otel,wpm", "--endpoints", "/api/health"),
        *("--reps", "1", "--duration", "1", "--bursts", "1", "--warmup", "0"),
    )
    assert data["meta"]["app"] == "shop"
    for sample in data["samples"]:
        assert sample["endpoint"] == "/api/health"
        assert (sample["non_2xx"], sample["socket_errors"]) == (0, {})
        assert sample["cpu_us"] > 0 and len(sample["burst_cpu_us"]) == 1
    assert "Requests per CPU-second of the server" in stdout


def test_fidelity_harness_compares_each_engines_report_with_the_truth(tmp_path) -> None:
    out = tmp_path / "fidelity.json"
    result = run_bench(
        "fidelity.py", "--reps", "1", "--configs", "wpm,wpm_precise", "--json", str(out),
        cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"wpm", "wpm_precise"}
    for [measured] in results.values():
        assert 0 < measured["phase_cpu_share"] < 1 and 0 < measured["phase_io_share"] < 1
        assert 0 < measured["coverage"] <= 1.01
        assert not measured["other_request_in_report"]
    assert "reports of /phases holding a frame of /busy: 0" in result.stdout


def test_the_driver_names_the_configurations_the_app_makes() -> None:
    sys.path.insert(0, str(REPO_DIR))
    try:
        from bench import app, run
    finally:
        sys.path.remove(str(REPO_DIR))
    assert run.CONFIGS == app.CONFIGS


def test_each_part_of_the_request_path_runs_against_the_processor_as_it_is(tmp_path) -> None:
    # The child mode, without valgrind: a part the processor's code no longer matches
    # (a renamed method, a changed signature) fails here rather than in a measurement.
    sys.path.insert(0, str(REPO_DIR / "bench"))
    try:
        import path_parts
    finally:
        sys.path.remove(str(REPO_DIR / "bench"))
    for part in ["empty", *path_parts.PARTS]:
        assert path_parts.main(["--child", part, "3"]) == 0, part


def test_the_request_floor_times_every_rung_of_the_ladder(tmp_path) -> None:
    result = run_bench("request_floor.py", "--rounds", "1", "--calls", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rungs = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert rungs == ["noop", "minimal", "+settings", "+trace_mark", "+task_key", "+body", "wpm"]
    assert "over noop" in result.stdout


def test_the_request_path_parts_harness_rejects_an_unknown_part(tmp_path) -> None:
    result = run_bench("path_parts.py", "--parts", "key,nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown part 'nope'" in result.stderr
