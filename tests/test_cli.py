"""The command line as a user runs it: exit codes, messages, overrides."""

from __future__ import annotations

import shutil
import subprocess
import sys

from publisher import cli, serve
from tests.conftest import REPO, cli_env, run_cli, snapshot, write_article, write_config


def test_module_entry_point_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("publisher ")


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "build" in result.stdout and "check" in result.stdout


def test_serve_flags_default_to_the_preview_servers_address():
    assert (cli.DEFAULT_HOST, cli.DEFAULT_PORT) == (serve.DEFAULT_HOST, serve.DEFAULT_PORT)
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert f"(default: {serve.DEFAULT_HOST})" in result.stdout and f"(default: {serve.DEFAULT_PORT})" in result.stdout


def test_status_loads_neither_the_build_nor_its_renderers(tmp_path):
    """Each command imports what it runs: `status`, polled by monitoring, starts quickly."""
    config = write_config(tmp_path)
    program = ("import sys\nfrom publisher.cli import main\n"
               f"main(['status', '-c', {str(config)!r}])\n"
               "heavy = sorted(name for name in ('publisher.build', 'publisher.serve', 'feedgen', 'lxml', 'boto3')"
               " if name in sys.modules)\n"
               "print('loaded:', heavy)\n")
    result = subprocess.run([sys.executable, "-c", program], env=cli_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "no status yet" in result.stderr and result.stdout == "loaded: []\n"


def test_missing_config_file_exits_2_naming_it(tmp_path):
    result = run_cli("build", "-c", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {tmp_path / 'nope.yaml'}: config file not found"


def test_invalid_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("site:\n  title: [a]\n")
    result = run_cli("check", "-c", config)
    assert result.returncode == 2 and "site.title: expected a non-empty title" in result.stderr


def test_missing_store_exits_3(tmp_path):
    result = run_cli("build", "-c", write_config(tmp_path, store="gone"))
    assert result.returncode == 3 and "store folder not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_store_and_output_flags_override_relative_to_cwd(tmp_path):
    write_article(tmp_path / "elsewhere", "a.md")
    (tmp_path / "cfg").mkdir()
    config = write_config(tmp_path / "cfg")
    result = run_cli("build", "-c", config, "--store", "elsewhere", "--output", "public", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "public" / "all.atom").exists() and not (tmp_path / "cfg" / "out").exists()


def test_check_lists_problems_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    write_article(store, "good.md")
    write_article(store, "bad.md", publishedDateTime="someday")
    write_article(store, "odd.md", images=["ftp://img.example.com/a.jpg"])
    result = run_cli("check", "-c", write_config(tmp_path))
    assert result.returncode == 1
    assert "bad.md: publishedDateTime: not an ISO 8601 date: 'someday' (left out)" in result.stdout
    assert "odd.md: images[0]: not an http(s) URL" in result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_check_lists_every_problem_of_a_file(tmp_path):
    write_article(tmp_path / "store", "good.md")
    write_article(tmp_path / "store", "bad.md", publishedDateTime="someday", webUrl="ftp://example.com/story",
                  quality="high")
    result = run_cli("check", "-c", write_config(tmp_path))
    assert result.returncode == 1 and result.stderr == ""
    assert result.stdout.splitlines() == [
        "bad.md: publishedDateTime: not an ISO 8601 date: 'someday' (left out)",
        "bad.md: webUrl: not an http(s) URL: 'ftp://example.com/story' (left out)",
        "bad.md: quality: expected a number, got str 'high' (left out)",
        "publisher: 3 problems in 1 file; 2 articles, 1 left out; 0 other documents",
    ]
    build = run_cli("build", "-c", write_config(tmp_path))  # the build warns about each, still one line each
    assert build.returncode == 0 and len(build.stderr.splitlines()) == 3 and len(build.stdout.splitlines()) == 1


def test_check_on_a_clean_store_exits_0(tmp_path):
    write_article(tmp_path / "store", "good.md")
    result = run_cli("check", "-c", write_config(tmp_path))
    assert result.returncode == 0 and "0 problems" in result.stdout


def test_quiet_and_verbose(tmp_path):
    write_article(tmp_path / "store", "a.md", published=False)
    config = write_config(tmp_path)
    verbose = run_cli("build", "-v", "-c", config)
    assert "a.md: not published" in verbose.stderr and "1 article read" in verbose.stdout
    assert "DEBUG publisher.stages.writer: wrote " in verbose.stderr  # per-file lines are DEBUG
    shutil.rmtree(tmp_path / "out")
    quiet = run_cli("build", "-q", "-c", config)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path):
    result = run_cli("build", "-v", "-q", "-c", write_config(tmp_path))
    assert result.returncode == 2 and "not allowed with" in result.stderr and result.stdout == ""


def test_verbose_does_not_change_what_a_build_does(tmp_path):
    write_article(tmp_path / "store", "a.md", published=False)
    write_article(tmp_path / "store", "b.md")
    config = write_config(tmp_path)
    assert run_cli("build", "-q", "-c", config).returncode == 0
    before = snapshot(tmp_path / "out")
    verbose = run_cli("build", "-v", "-c", config)  # a no-op rebuild, with every detail logged
    assert verbose.returncode == 0 and " 0 files written," in verbose.stdout
    assert snapshot(tmp_path / "out") == before


def test_a_default_build_prints_one_line_and_a_quiet_one_nothing(tmp_path):
    """The bundled seeds: dozens of files written, duplicates, unpublished and non-article files."""
    shutil.copytree(REPO / "seeds", tmp_path / "seeds")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    default = run_cli("build", "-c", tmp_path / "config.yaml")
    assert default.returncode == 0, default.stderr
    assert default.stderr == "" and len(default.stdout.splitlines()) == 1, default.stdout + default.stderr
    assert default.stdout.startswith("publisher: ") and " files written" in default.stdout
    shutil.rmtree(tmp_path / "feeds")  # everything written again, quietly
    quiet = run_cli("build", "-q", "-c", tmp_path / "config.yaml")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "feeds" / "all.atom").is_file()


def test_a_broken_article_is_one_warning_on_stderr_at_both_levels(tmp_path):
    write_article(tmp_path / "store", "good.md")
    write_article(tmp_path / "store", "bad.md", publishedDateTime="someday")
    config = write_config(tmp_path)
    for flags in ([], ["-q"]):
        result = run_cli("build", *flags, "-c", config)
        assert result.returncode == 0
        [warning] = result.stderr.splitlines()
        assert "WARNING" in warning and "bad.md: publishedDateTime" in warning
        assert len(result.stdout.splitlines()) == (0 if flags else 1)


def test_bundled_seeds_build_cleanly(tmp_path):
    shutil.copytree(REPO / "seeds", tmp_path / "seeds")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    result = run_cli("build", "--strict", "-c", tmp_path / "config.yaml")
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr
    assert len(list((tmp_path / "feeds" / "topics").glob("*.rss"))) >= 10
    assert run_cli("check", "-c", tmp_path / "config.yaml").returncode == 0
