"""Serving the output folder: a real nginx with deploy/nginx.conf and `publisher serve`, each started as a
subprocess on 127.0.0.1, answer the same HTTP checks. nginx is the Debian package (.ci/run installs it); CI
sets PUBLISHER_REQUIRE_NGINX so that a missing nginx fails instead of skipping."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from publisher.config import DEFAULTS, ScheduleConfig, parse_duration
from publisher.serve import cache_max_age, make_server
from tests.conftest import REPO, SITE, cli_env, run_cli, write_article, write_config

NGINX_CONF = REPO / "deploy" / "nginx.conf"
MIME_TYPES = Path("/etc/nginx/mime.types")  # the Debian package's, included by its own nginx.conf too
BASE_URL = "https://feeds.example.org/"
TYPES = {".atom": "application/atom+xml", ".rss": "application/rss+xml", ".json": "application/feed+json",
         ".opml": "text/x-opml", ".html": "text/html"}
DEADLINE = 20.0  # seconds a server gets to start or stop


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes


@dataclass
class Server:
    name: str
    host: str
    port: int

    def get(self, path: str, method: str = "GET", **headers: str) -> Response:
        """A request with exactly these headers (http.client adds Accept-Encoding: identity unless given)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
            answer = connection.getresponse()
            return Response(answer.status, answer.headers, answer.read())
        finally:
            connection.close()


class _Hub(BaseHTTPRequestHandler):
    """A WebSub hub on 127.0.0.1 that accepts every publish ping, so builds that ping stay on this machine."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


POLL = 0.01  # seconds between serve_forever()'s checks for shutdown(): a test's server stops at once


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """`server` answering on a thread of this process until the block ends."""
    thread = threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    """A hub that keeps no record: one serves the whole module."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_address[1]}/hub"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory, hub: str) -> Path:
    """The store, config and first build of `site`, made once per module through the CLI."""
    folder = tmp_path_factory.mktemp("site")
    store = folder / "store"
    write_article(store, "a.md", topics=["AI", "Robots"], publishedDateTime="2024-01-01T10:00:00Z")
    write_article(store, "b.md", topics=["AI"], publishedDateTime="2024-01-02T10:00:00Z")
    write_config(folder, websub={"hubs": [hub]}, site={**SITE, "base_url": BASE_URL})
    rebuild(folder)
    return folder


@pytest.fixture
def site(tmp_path: Path, built_site: Path) -> Path:
    """A built output folder whose files were written a while ago (as in production), with WebSub on: a copy
    of the module's build (paths in the config are relative to it), each test free to change its own."""
    shutil.copytree(built_site, tmp_path, dirs_exist_ok=True)
    backdate(tmp_path / "out")
    return tmp_path


def rebuild(folder: Path) -> None:
    result = run_cli("build", "-c", folder / "config.yaml")
    assert result.returncode == 0, result.stderr


def backdate(folder: Path, seconds: int = 3600) -> None:
    """Move every file's modification time back, so that a file rewritten now gets a new Last-Modified
    even within the same second as the first build (HTTP dates have whole seconds)."""
    past = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


def served_paths(out: Path) -> list[str]:
    """URL paths of every feed and page the build wrote (the .gz copies are variants of them)."""
    return sorted(f"/{p.relative_to(out).as_posix()}" for p in out.rglob("*")
                  if p.is_file() and p.suffix != ".gz")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                            if os.access(p, os.X_OK)), None)
    if found and MIME_TYPES.is_file():
        return found
    message = (f"nginx not found (binary {found or 'missing'}, {MIME_TYPES} "
               f"{'present' if MIME_TYPES.is_file() else 'missing'}): install the Debian package nginx")
    if os.environ.get("PUBLISHER_REQUIRE_NGINX"):
        pytest.fail(message)
    pytest.skip(message)


def nginx_site_conf(root: Path, port: int, hub: str) -> str:
    """deploy/nginx.conf as an operator would edit it: this root, this port, WebSub on with this hub."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    edits = [
        (r"(?m)^(\s*)root /srv/publisher/feeds;", rf"\1root {root};"),
        (r"(?m)^(\s*)listen 80;", rf"\1listen 127.0.0.1:{port};"),
        (r"(?m)^\s*listen \[::\]:80;[^\n]*\n", ""),  # the test machine may have no IPv6
        (r"(?m)^(\s*)# (~\\\.\(atom\|rss\|json\)\$ '<)https://hub\.example\.org/>", rf"\1\2{hub}>"),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"deploy/nginx.conf no longer has the line the test edits: {pattern}"
    return text


def start_nginx(folder: Path, root: Path, hub: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = find_nginx()
    folder.mkdir()
    for _attempt in range(3):  # another process may take the free port before nginx binds it
        port = free_port()
        (folder / "publisher.conf").write_text(nginx_site_conf(root, port, hub), encoding="utf-8")
        temp_paths = "\n".join(f"    {kind}_temp_path {folder / kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (folder / "nginx.conf").write_text(f"""\
daemon off;
master_process off;  # one process as the test's own user: nothing to switch to, nothing left behind
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    include {MIME_TYPES};
    default_type application/octet-stream;
    access_log {folder / "access.log"};
{temp_paths}
    include {folder / "publisher.conf"};
}}
""", encoding="utf-8")
        process = subprocess.Popen([binary, "-p", f"{folder}/", "-c", str(folder / "nginx.conf"),
                                    "-e", str(folder / "error.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _wait_listening(process, port):
            return process, port
        log = (folder / "error.log").read_text(errors="replace") if (folder / "error.log").exists() else ""
        if "Address already in use" not in log:
            pytest.fail(f"nginx did not start with deploy/nginx.conf:\n{log}")
    pytest.fail("nginx found no free port in 3 attempts")


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    return False


def start_serve(site: Path) -> tuple[subprocess.Popen[str], int]:
    log = (site / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "publisher", "serve", "-c", str(site / "config.yaml"),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=cli_env())
    log.close()
    line = process.stdout.readline()  # the announcement, printed once the port is bound
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        process.kill()
        process.wait()
        pytest.fail(f"publisher serve did not start: {line!r}\n{(site / 'serve.log').read_text()}")
    return process, int(match.group(1))


def stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(params=["nginx", "publisher serve"])
def server(request: pytest.FixtureRequest, site: Path, hub: str) -> Iterator[Server]:
    if request.param == "nginx":
        process, port = start_nginx(site / "nginx", site / "out", hub)
    else:
        process, port = start_serve(site)
    yield Server(request.param, "127.0.0.1", port)
    code = stop(process)
    if request.param == "publisher serve":
        assert code == 0, (site / "serve.log").read_text()


def validators(response: Response) -> tuple[str, str]:
    return response.headers["ETag"], response.headers["Last-Modified"]


# What both servers send, by kind of file: max-age is the default schedule.every (15m).
FEED_CACHE = "public, max-age=900, stale-while-revalidate=86400"
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag, Last-Modified"}


def check_policy_headers(response: Response, path: str) -> None:
    """Cache-Control, CORS and nosniff as the file's kind asks (feeds and the OPML list, pages)."""
    headers, suffix = response.headers, Path(path).suffix
    assert headers["X-Content-Type-Options"] == "nosniff", path
    if suffix in (".atom", ".rss", ".json", ".opml"):
        assert headers["Cache-Control"] == FEED_CACHE, path
        assert {name: headers[name] for name in CORS} == CORS, path
    else:
        assert suffix == ".html", path
        assert headers["Cache-Control"] == "public, max-age=900", path
        assert all(name not in headers for name in CORS), path
    assert headers.get("Expires") is None and len(headers.get_all("Cache-Control")) == 1, path


def test_feeds_index_and_opml_are_served_with_types_validators_and_gzip(site, server, hub):
    out = site / "out"
    paths = served_paths(out)
    assert {"/all.atom", "/all.rss", "/all.json", "/topics/robots.json", "/index.html", "/feeds.opml"} \
        <= set(paths)
    first: dict[str, tuple[str, str]] = {}
    for path in paths:
        data = (out / path.lstrip("/")).read_bytes()
        plain = server.get(path)
        assert plain.status == 200, (server.name, path)
        assert plain.headers["Content-Type"] == f"{TYPES[Path(path).suffix]}; charset=utf-8", path
        assert plain.body == data and plain.headers.get("Content-Encoding") is None
        check_policy_headers(plain, path)
        assert "Accept-Encoding" in plain.headers["Vary"], path  # a .gz copy exists for every file here
        etag, last_modified = first[path] = validators(plain)
        assert etag and last_modified
        # The copy has its file's modification time, so both answers are dated alike.
        assert (out / f"{path.lstrip('/')}.gz").stat().st_mtime_ns == (out / path.lstrip("/")).stat().st_mtime_ns

        not_modified = server.get(path, If_None_Match=etag)
        assert not_modified.status == 304
        check_policy_headers(not_modified, path)
        assert server.get(path, If_Modified_Since=last_modified).status == 304
        assert server.get(path, If_None_Match='"other"').status == 200

        packed = server.get(path, Accept_Encoding="gzip, deflate")
        assert packed.status == 200 and packed.headers["Content-Encoding"] == "gzip", path
        assert packed.headers["Content-Type"] == plain.headers["Content-Type"]
        assert packed.headers["Last-Modified"] == last_modified, path
        check_policy_headers(packed, path)
        assert "Accept-Encoding" in packed.headers["Vary"]
        assert packed.body == (out / f"{path.lstrip('/')}.gz").read_bytes()
        assert gzip.decompress(packed.body) == data
        first[f"{path} gzip"] = validators(packed)

        link = plain.headers.get("Link")
        if Path(path).suffix in (".atom", ".rss", ".json"):  # WebSub discovery, as in the feed itself
            assert link == f'<{hub}>; rel="hub", <{BASE_URL}{path.lstrip("/")}>; rel="self"', path
        else:
            assert link is None, path

    index = server.get("/")
    assert index.status == 200 and index.body == (out / "index.html").read_bytes()
    assert index.headers["Content-Type"] == "text/html; charset=utf-8"
    check_policy_headers(index, "/index.html")
    (out / ".all.atom.x1y2.publisher-tmp").write_bytes(b"half a feed")  # left by a killed build
    hidden = server.get("/.all.atom.x1y2.publisher-tmp")
    assert hidden.status == 404 and hidden.headers["X-Content-Type-Options"] == "nosniff"
    missing = server.get("/no-such-feed.atom")
    assert missing.status == 404 and missing.headers["X-Content-Type-Options"] == "nosniff"

    rebuild(site)  # nothing changed: nothing rewritten, so the validators stay
    for path in paths:
        assert validators(server.get(path)) == first[path], path
        assert validators(server.get(path, Accept_Encoding="gzip")) == first[f"{path} gzip"], path
        assert server.get(path, If_None_Match=first[path][0]).status == 304

    write_article(site / "store", "c.md", topics=["AI"], publishedDateTime="2024-01-03T10:00:00Z")
    rebuild(site)
    for path in ("/all.atom", "/all.rss", "/all.json", "/topics/ai.atom", "/index.html"):
        fresh = server.get(path, If_None_Match=first[path][0])
        assert fresh.status == 200, path
        assert fresh.headers["ETag"] != first[path][0] and fresh.headers["Last-Modified"] != first[path][1]
        assert fresh.body == (site / "out" / path.lstrip("/")).read_bytes()
        packed = server.get(path, Accept_Encoding="gzip", If_Modified_Since=first[f"{path} gzip"][1])
        assert packed.status == 200 and gzip.decompress(packed.body) == fresh.body
    assert b"https://news.example.com/c" in server.get("/all.atom").body
    assert validators(server.get("/topics/robots.atom")) == first["/topics/robots.atom"]


def test_feeds_answer_a_cors_preflight(site, server):
    for path in ("/all.json", "/topics/ai.atom", "/all.rss", "/feeds.opml"):
        answer = server.get(path, method="OPTIONS", Origin="https://reader.example.net",
                            Access_Control_Request_Method="GET",
                            Access_Control_Request_Headers="if-none-match")
        assert answer.status == 204, (server.name, path)
        assert answer.body == b""
        headers = answer.headers
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")
        assert "if-none-match" in headers["Access-Control-Allow-Headers"].lower()
        assert int(headers["Access-Control-Max-Age"]) > 0
        assert headers["X-Content-Type-Options"] == "nosniff"
    refused = server.get("/index.html", method="OPTIONS", Origin="https://reader.example.net",
                         Access_Control_Request_Method="GET")
    assert refused.status == 405 and "Access-Control-Allow-Origin" not in refused.headers
    # A plain GET carries no preflight headers.
    assert "Access-Control-Allow-Methods" not in server.get("/all.json").headers


def test_nginx_conf_max_age_is_the_default_schedule():
    """deploy/nginx.conf is a template: its max-age must match the default `schedule.every`."""
    every = int(parse_duration(DEFAULTS["schedule"]["every"]))
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert set(re.findall(r"max-age=(\d+)", text)) == {str(every)}


def test_hubs_from_config_reach_every_feed(site, hub):
    out = site / "out"
    feeds = sorted(p.with_suffix("") for p in out.rglob("*.atom"))
    assert len(feeds) == 3
    for feed in feeds:
        assert f'<link href="{hub}" rel="hub"/>'.encode() in feed.with_suffix(".atom").read_bytes()
        assert f'<atom:link href="{hub}" rel="hub"/>'.encode() in feed.with_suffix(".rss").read_bytes()
        document = json.loads(feed.with_suffix(".json").read_text(encoding="utf-8"))
        assert document["hubs"] == [{"type": "WebSub", "url": hub}]


# The preview server alone: path handling, HEAD, content negotiation details, and its command line.

@pytest.fixture
def preview(site: Path) -> Iterator[Server]:
    """`publisher serve`'s server in a thread of this process, over the site's output folder."""
    server = make_server(site / "out", "127.0.0.1", 0, BASE_URL, ())
    with serving(server):
        yield Server("preview", "127.0.0.1", server.server_address[1])


@pytest.mark.parametrize("path", ["/../config.yaml", "/%2e%2e/config.yaml", "/topics/../../config.yaml",
                                  "/..%2fconfig.yaml", "/.publisher", "/topics/.hidden.atom"])
def test_preview_serves_nothing_outside_the_output_folder(site, preview, path):
    (site / "out" / "topics" / ".hidden.atom").write_text("hidden")
    assert preview.get(path).status == 404


def test_preview_follows_folders_and_answers_head(preview):
    moved = preview.get("/topics")
    assert moved.status == 301 and moved.headers["Location"] == "/topics/"
    assert preview.get("/topics/").status == 404  # no listing of folders
    head = preview.get("/all.atom", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0
    assert preview.get("/all.atom?utm_source=x").status == 200


def test_preview_content_negotiation_details(site, preview):
    plain = preview.get("/all.json")
    assert preview.get("/all.json", Accept_Encoding="gzip;q=0").headers.get("Content-Encoding") is None
    assert preview.get("/all.json", Accept_Encoding="br, *;q=0.5").headers["Content-Encoding"] == "gzip"
    asked = preview.get("/all.json.gz")  # the copy by its own name is a gzip file, not a feed
    assert asked.headers["Content-Type"] == "application/gzip" and asked.headers.get("Content-Encoding") is None
    etag, last_modified = validators(plain)
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    assert preview.get("/all.json", If_None_Match='"x"', If_Modified_Since=last_modified).status == 200
    assert preview.get("/all.json", If_None_Match=f'W/{etag}').status == 304
    assert preview.get("/all.json", If_Modified_Since="Thu, 01 Jan 1970 00:00:00 GMT").status == 200
    assert preview.get("/all.json", If_Modified_Since="not a date").status == 200
    (site / "out" / "notes.txt").write_text("mine")
    assert preview.get("/notes.txt").headers["Content-Type"] == "text/plain; charset=utf-8"


def test_preview_never_serves_a_copy_older_than_its_file(site, preview):
    """A file changed by hand (or by anything but the publisher) no longer has its copy's modification time:
    the stale copy is left alone and everyone gets the file."""
    feed = site / "out" / "all.json"
    feed.write_bytes(feed.read_bytes().replace(b"Feeds for tests.", b"Edited by hand."))
    answer = preview.get("/all.json", Accept_Encoding="gzip")
    assert answer.headers.get("Content-Encoding") is None and b"Edited by hand." in answer.body
    assert "Accept-Encoding" in answer.headers["Vary"]


@pytest.mark.parametrize(("schedule", "seconds"), [
    (ScheduleConfig(every=900.0, cron=None, timezone="UTC", misfire_grace=300.0), 900),
    (ScheduleConfig(every=3600.0, cron=None, timezone="UTC", misfire_grace=300.0), 3600),
    (ScheduleConfig(every=None, cron="0 */2 * * *", timezone="UTC", misfire_grace=300.0), 7200),
    (ScheduleConfig(every=None, cron="*/5 * * * *", timezone="Europe/Paris", misfire_grace=300.0), 300),
])
def test_serve_max_age_follows_the_schedule(schedule, seconds):
    assert cache_max_age(schedule) == seconds


def test_serve_reads_max_age_from_the_config(site):
    config = site / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "schedule:\n  every: 1h\n", encoding="utf-8")
    process, port = start_serve(site)
    try:
        answer = Server("publisher serve", "127.0.0.1", port).get("/all.atom")
        assert answer.headers["Cache-Control"] == "public, max-age=3600, stale-while-revalidate=86400"
        page = Server("publisher serve", "127.0.0.1", port).get("/topics/ai.html")
        assert page.headers["Cache-Control"] == "public, max-age=3600"
    finally:
        assert stop(process) == 0


def test_serve_without_output_folder_says_build_first(tmp_path):
    result = run_cli("serve", "-c", write_config(tmp_path), "--port", "0")
    assert result.returncode == 2
    assert "output folder not found; run `publisher build` first" in result.stderr


def test_serve_on_a_taken_port_fails_with_a_message(site):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "-c", site / "config.yaml", "--port", str(port))
    assert result.returncode == 2
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_rejects_a_bad_port(site):
    result = run_cli("serve", "-c", site / "config.yaml", "--port", "70000")
    assert result.returncode == 2 and "expected a port number" in result.stderr
