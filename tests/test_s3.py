"""S3-compatible storage, for real: moto's S3 server on 127.0.0.1 (tests/s3_server.py), the publisher talking
to it over HTTP with boto3, credentials from the environment as in production.

The publisher runs as a subprocess (run_cli) for the builds whose exit a test is about, for the first upload
to a bucket and the first build from one, and where processes are the point (a kill, the daemon and a second
publisher); its other builds run in this process (run_main: the same command and output, without a second
of interpreter start and boto3 imports each), mostly on the state and the bucket a subprocess left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import feedparser
import pytest
import yaml

from publisher.config import load_config
from tests.conftest import cli_env, run_cli, run_main, write_article, write_config
from tests.s3_server import CREDENTIALS, moto_server_process

LEASE = ".publisher-lease"
CACHE_CONTROL = "public, max-age=900, stale-while-revalidate=86400"  # schedule.every 15m, as nginx.conf
CONTENT_TYPES = {  # what deploy/nginx.conf sends
    ".atom": "application/atom+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path):
    """Credentials from the environment only, nothing from this machine's AWS files or metadata service."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def new_bucket(server, client=None) -> str:
    name = f"pub-{uuid.uuid4().hex[:16]}"
    (client or server.client()).create_bucket(Bucket=name)
    return name


def topic_store(store: Path, topics: list[str], per_topic: int = 1) -> None:
    for topic in topics:
        for n in range(per_topic):
            slug = f"{topic.lower().replace(' ', '-')}-{n}"
            write_article(store, f"{slug}.md", topics=[topic], slug=slug)


def bucket_config(folder: Path, server, bucket: str, prefix: str = "feeds/", s3: dict | None = None,
                  store: Path | str | None = None, **settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, output=f"s3://{bucket}/{prefix}", store=str(store or folder.parent / "store"),
                        s3={"endpoint_url": server.url, **(s3 or {})}, **settings)


def local_config(folder: Path, store: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, store=str(store))


def objects(client, bucket: str, prefix: str = "feeds/") -> dict[str, dict]:
    """Every object under the prefix but the lease: name -> bytes and headers."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix):]
            if name == LEASE:
                continue
            answer = client.get_object(Bucket=bucket, Key=item["Key"])
            found[name] = {"body": answer["Body"].read(), "type": answer["ContentType"],
                           "cache": answer.get("CacheControl"), "etag": answer["ETag"]}
    return found


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".gz"}


def writes(server, mark: int, bucket: str, prefix: str = "feeds/") -> list:
    """PUTs, POSTs (DeleteObjects) and DELETEs since `mark`, the lease's own writes left aside."""
    return server.calls_since(mark, bucket, skip_keys={f"{prefix}{LEASE}"})


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_the_bucket_holds_the_local_build_with_nginx_headers_and_a_rebuild_writes_nothing(tmp_path, s3_server):
    topic_store(tmp_path / "store", ["AI", "Robots", "Data Centers"], per_topic=2)
    local = run_main("build", "-q", "-c", local_config(tmp_path / "local", tmp_path / "store"))
    assert local.returncode == 0, local.stderr
    bucket = new_bucket(s3_server)
    config = bucket_config(tmp_path / "remote", s3_server, bucket)

    first = run_cli("build", "-c", config)
    assert first.returncode == 0, first.stderr
    expected = local_files(tmp_path / "local" / "out")
    assert "all.atom" in expected and "topics/robots.rss" in expected and "index.html" in expected
    assert f"{len(expected)} objects uploaded, 0 unchanged, 0 deleted" in first.stdout
    found = objects(s3_server.client(), bucket)
    assert sorted(found) == sorted(expected)  # no .gz copies: the CDN compresses
    for name, data in expected.items():
        assert found[name]["body"] == data, name
        assert found[name]["type"] == CONTENT_TYPES[Path(name).suffix], name
        assert found[name]["cache"] == CACHE_CONTROL, name
    assert feedparser.parse(found["all.atom"]["body"]).entries

    mark = s3_server.mark()
    second = run_main("build", "-c", config)
    assert second.returncode == 0, second.stderr
    assert writes(s3_server, mark, bucket) == []
    assert f"0 objects uploaded, {len(expected)} unchanged, 0 deleted" in second.stdout
    assert objects(s3_server.client(), bucket) == found

    # A lost manifest is rebuilt from the listing: still not one upload.
    for manifest in (tmp_path / "remote" / "state" / "manifests").glob("*.json"):
        manifest.unlink()
    for fingerprints in (tmp_path / "remote" / "state" / "fingerprints").glob("*.json"):
        fingerprints.unlink()
    mark = s3_server.mark()
    third = run_main("build", "-c", config)
    assert third.returncode == 0, third.stderr
    assert writes(s3_server, mark, bucket) == []
    assert objects(s3_server.client(), bucket) == found


def test_a_changed_feed_is_uploaded_feeds_first_and_a_removed_topic_deleted_but_never_a_foreign_object(
        tmp_path, s3_server):
    topic_store(tmp_path / "store", ["AI", "Robots"])
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="feeds/topics/robots.atom.bak", Body=b"someone else's")
    client.put_object(Bucket=bucket, Key="feeds/robots.txt", Body=b"User-agent: *\n")
    config = bucket_config(tmp_path / "remote", s3_server, bucket)
    assert run_main("build", "-q", "-c", config).returncode == 0
    assert "topics/robots.atom" in objects(client, bucket)

    (tmp_path / "store" / "robots-0.md").unlink()
    write_article(tmp_path / "store", "ai-new.md", topics=["AI"], publishedDateTime="2024-02-01T00:00:00Z")
    mark = s3_server.mark()
    result = run_main("build", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "4 deleted" in result.stdout  # its three feeds and its page
    found = objects(client, bucket)
    assert not any(name.startswith("topics/robots.") and name.endswith((".atom", ".rss", ".json", ".html"))
                   for name in found)
    assert found["topics/robots.atom.bak"]["body"] == b"someone else's"
    assert found["robots.txt"]["body"] == b"User-agent: *\n"
    assert "ai-new" in found["all.atom"]["body"].decode()
    order = [call.key[len("feeds/"):] for call in writes(s3_server, mark, bucket)]
    assert order.index("all.atom") < order.index("index.html") and order.index("all.atom") < order.index(
        "feeds.opml")
    assert order[-1] == "" and s3_server.calls_since(mark, bucket, ("POST",))[-1].query.startswith("delete")


def test_failed_uploads_leave_the_previous_objects_exit_4_in_one_line_and_the_next_build_finishes(
        tmp_path, s3_server):
    topic_store(tmp_path / "store", ["AI", "Robots"])
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    config = bucket_config(tmp_path / "remote", s3_server, bucket)
    assert run_main("build", "-q", "-c", config).returncode == 0
    before = objects(client, bucket)
    write_article(tmp_path / "store", "ai-new.md", topics=["AI"], publishedDateTime="2024-02-01T00:00:00Z")
    (tmp_path / "store" / "robots-0.md").unlink()

    s3_server.refuse = lambda method, key: method == "PUT" and key.endswith(".rss")
    try:
        result = run_cli("build", "-q", "-c", config)
    finally:
        s3_server.refuse = None
    assert result.returncode == 4
    assert error_lines(result) == [
        f"Error: 2 objects not uploaded: s3://{bucket}/feeds/: access denied (AccessDenied); the credentials need "
        f"list, get, put and delete on this prefix (first: s3://{bucket}/feeds/all.rss)"]
    found = objects(client, bucket)
    assert found["all.rss"] == before["all.rss"] and found["topics/ai.rss"] == before["topics/ai.rss"]
    assert "ai-new" in found["all.atom"]["body"].decode()  # the feeds that could go up did
    assert found["index.html"] == before["index.html"]  # the pages wait for every feed
    assert "topics/robots.atom" in found  # and nothing is deleted before they are up

    local = run_main("build", "-q", "-c", local_config(tmp_path / "local", tmp_path / "store"))
    assert local.returncode == 0
    mark = s3_server.mark()
    result = run_main("build", "-c", config)
    assert result.returncode == 0, result.stderr
    uploaded = {call.key[len("feeds/"):] for call in writes(s3_server, mark, bucket) if call.method == "PUT"}
    assert "all.rss" in uploaded and "all.atom" not in uploaded  # recorded as uploaded by the failed build
    assert {name: value["body"] for name, value in objects(client, bucket).items()} == local_files(
        tmp_path / "local" / "out")


def test_more_deletions_than_max_deletes_stop_the_build_and_delete_nothing(tmp_path, s3_server):
    topic_store(tmp_path / "store", ["AI", "Robots", "Chips"])
    bucket = new_bucket(s3_server)
    config = bucket_config(tmp_path / "remote", s3_server, bucket, s3={"max_deletes": 5})
    assert run_main("build", "-q", "-c", config).returncode == 0
    before = objects(s3_server.client(), bucket)
    (tmp_path / "store" / "robots-0.md").unlink()
    (tmp_path / "store" / "chips-0.md").unlink()

    mark = s3_server.mark()
    result = run_cli("build", "-q", "-c", config)
    assert result.returncode == 2
    assert error_lines(result) == [line for line in error_lines(result) if line.startswith("Error:")]
    assert "would delete 8 objects, more than s3.max_deletes (5)" in result.stderr  # 2 topics, 4 objects each
    assert writes(s3_server, mark, bucket) == []
    assert objects(s3_server.client(), bucket) == before

    config = bucket_config(tmp_path / "remote", s3_server, bucket, s3={"max_deletes": 8})
    result = run_main("build", "-c", config)
    assert result.returncode == 0 and "8 deleted" in result.stdout


def plant_lease(client, bucket: str, **holder) -> None:
    body = {"host": "feeds-7f9c", "pid": 4242, "boot": "elsewhere", "since": "2026-01-01T00:00:00+00:00",
            "renewed": "2026-01-01T00:00:00+00:00", "ttl": 300, "released": False, **holder}
    client.put_object(Bucket=bucket, Key=f"feeds/{LEASE}", Body=json.dumps(body).encode())


def test_a_second_publisher_is_refused_by_the_lease_and_a_stale_lease_is_taken_over(tmp_path, s3_server):
    write_article(tmp_path / "store", "a.md")
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    config = bucket_config(tmp_path / "remote", s3_server, bucket)
    plant_lease(client, bucket)
    result = run_cli("build", "-q", "-c", config)
    assert result.returncode == 75
    assert len(error_lines(result)) == 1
    assert "another publisher holds the lease" in result.stderr
    assert "host feeds-7f9c, pid 4242, since 2026-01-01T00:00:00+00:00" in result.stderr
    assert objects(client, bucket) == {}

    plant_lease(client, bucket, ttl=1)
    deadline = time.monotonic() + 30
    while True:  # the server's clock decides when the lease is older than its TTL
        head = client.head_object(Bucket=bucket, Key=f"feeds/{LEASE}")
        from email.utils import parsedate_to_datetime
        now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        if (now - head["LastModified"]).total_seconds() > 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    result = run_main("build", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "all.atom" in objects(client, bucket)
    lease = json.loads(client.get_object(Bucket=bucket, Key=f"feeds/{LEASE}")["Body"].read())
    assert lease["released"] is True and lease["host"] != "feeds-7f9c"


def test_the_daemon_holds_the_lease_for_its_whole_life(tmp_path, s3_server):
    write_article(tmp_path / "store", "a.md")
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    config = bucket_config(tmp_path / "remote", s3_server, bucket, schedule={"every": "1h"})
    daemon = subprocess.Popen([sys.executable, "-m", "publisher", "run", "-c", str(config)], env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not client.list_objects_v2(Bucket=bucket, Prefix="feeds/all.atom")["KeyCount"] \
                and time.monotonic() < deadline:  # a listing, not a download of every object, each time
            assert daemon.poll() is None, daemon.communicate()
            time.sleep(0.2)
        lease = json.loads(client.get_object(Bucket=bucket, Key=f"feeds/{LEASE}")["Body"].read())
        assert lease["pid"] == daemon.pid and lease["released"] is False
        second = run_cli("build", "-q", "-c", config)
        assert second.returncode == 75 and f"pid {daemon.pid}" in second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    lease = json.loads(client.get_object(Bucket=bucket, Key=f"feeds/{LEASE}")["Body"].read())
    assert lease["released"] is True
    assert run_main("build", "-q", "-c", config).returncode == 0


def test_a_service_without_conditional_writes_is_refused_unless_the_lease_is_off(tmp_path, s3_server):
    write_article(tmp_path / "store", "a.md")
    bucket = new_bucket(s3_server)
    s3_server.ignore_conditions = True
    try:
        result = run_cli("build", "-q", "-c", bucket_config(tmp_path / "remote", s3_server, bucket))
        assert result.returncode == 2
        assert len(error_lines(result)) == 1 and "does not honour conditional writes" in result.stderr
        assert "s3.lease: false" in result.stderr
        assert objects(s3_server.client(), bucket) == {}
        unleased = bucket_config(tmp_path / "remote", s3_server, bucket, s3={"lease": False})
        result = run_main("build", "-q", "-c", unleased)
        assert result.returncode == 0, result.stderr
    finally:
        s3_server.ignore_conditions = False
    assert "all.atom" in objects(s3_server.client(), bucket)


def test_a_build_killed_while_uploading_leaves_a_bucket_the_next_build_makes_consistent(tmp_path, s3_server):
    topics = [f"Topic {n:03d}" for n in range(25)]  # about 100 objects: the kill after 20 writes is mid-way
    topic_store(tmp_path / "store", topics)
    assert run_main("build", "-q", "-c", local_config(tmp_path / "local", tmp_path / "store")).returncode == 0
    expected = local_files(tmp_path / "local" / "out")
    bucket = new_bucket(s3_server)
    config = bucket_config(tmp_path / "remote", s3_server, bucket, s3={"workers": 1})
    mark = s3_server.mark()
    build = subprocess.Popen([sys.executable, "-m", "publisher", "build", "-q", "-c", str(config)], env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(writes(s3_server, mark, bucket)) < 20 and time.monotonic() < deadline and build.poll() is None:
        time.sleep(0.01)
    build.kill()  # SIGKILL: no clean-up of any kind
    build.wait()
    assert 0 < len(writes(s3_server, mark, bucket)) < len(expected), "the build was not killed mid-way"
    for name, found in objects(s3_server.client(), bucket).items():  # every object there is whole
        assert found["body"] == expected[name], name

    result = run_main("build", "-c", config)  # the lease of the killed build: same machine, dead pid
    assert result.returncode == 0, result.stderr
    found = objects(s3_server.client(), bucket)
    assert {name: value["body"] for name, value in found.items()} == expected
    mark = s3_server.mark()
    assert run_main("build", "-q", "-c", config).returncode == 0
    assert writes(s3_server, mark, bucket) == []


def test_serve_refuses_a_bucket(tmp_path, s3_server):
    result = run_cli("serve", "-c", bucket_config(tmp_path / "remote", s3_server, "some-bucket"))
    assert result.returncode == 2 and "is a bucket" in result.stderr


# The store in a bucket.

def put_article(client, bucket: str, name: str, **fields) -> None:
    from tests.conftest import article_text
    fields.setdefault("slug", Path(name).stem)
    client.put_object(Bucket=bucket, Key=f"articles/{name}", Body=article_text(**fields).encode())


def entry_titles(folder: Path) -> set[str]:
    return {entry.title for entry in feedparser.parse((folder / "all.atom").read_bytes()).entries}


def test_a_store_in_a_bucket_new_edited_deleted_and_embargoed_objects(tmp_path, s3_server):
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    put_article(client, bucket, "one.md")
    put_article(client, bucket, "two.md")
    put_article(client, bucket, "2024/three.md")
    put_article(client, bucket, "broken.md", title=None, excerpt=None)  # not an article: no title
    put_article(client, bucket, "bad-date.md", publishedDateTime="not a date")
    client.put_object(Bucket=bucket, Key="articles/notes.txt", Body=b"no front matter")
    client.put_object(Bucket=bucket, Key="elsewhere/four.md", Body=b"---\ntitle: outside the prefix\n---\n")
    config = write_config(tmp_path, store=f"s3://{bucket}/articles/", exclude=["**/*.txt"],
                          s3={"endpoint_url": s3_server.url})
    first = run_cli("build", "-c", config)
    assert first.returncode == 0, first.stderr
    assert entry_titles(tmp_path / "out") == {"Story one", "Story two", "Story three"}
    assert f"s3://{bucket}/articles/bad-date.md: publishedDateTime" in first.stderr

    mark = s3_server.mark()
    put_article(client, bucket, "new.md")
    put_article(client, bucket, "two.md", title="Story two, corrected")
    client.delete_object(Bucket=bucket, Key="articles/one.md")
    put_article(client, bucket, "later.md", publishedDateTime="2999-01-01T00:00:00Z")
    second = run_main("build", "-q", "-c", config)
    assert second.returncode == 0, second.stderr
    assert entry_titles(tmp_path / "out") == {"Story new", "Story two, corrected", "Story three"}
    downloaded = {call.key for call in s3_server.calls_since(mark, bucket, ("GET",)) if call.key}
    assert downloaded == {"articles/new.md", "articles/two.md", "articles/later.md"}

    mark = s3_server.mark()
    third = run_main("build", "-q", "-c", config)
    assert third.returncode == 0
    assert [call for call in s3_server.calls_since(mark, bucket, ("GET",)) if call.key] == []


def test_a_missing_bucket_is_one_line_and_exit_3_for_the_store_4_for_the_output(tmp_path, s3_server):
    write_article(tmp_path / "store", "a.md")
    store = run_main("build", "-q", "-c", write_config(tmp_path, store="s3://no-such-bucket-here/articles/",
                                                     s3={"endpoint_url": s3_server.url}))
    assert store.returncode == 3
    assert error_lines(store) == ["Error: s3://no-such-bucket-here/articles/: bucket 'no-such-bucket-here' "
                                  "does not exist"]
    output = run_cli("build", "-q", "-c", bucket_config(tmp_path / "remote", s3_server, "no-such-bucket-here"))
    assert output.returncode == 4
    assert error_lines(output) == ["Error: s3://no-such-bucket-here/feeds/: bucket 'no-such-bucket-here' "
                                   "does not exist"]


def test_wrong_credentials_are_one_line_and_exit_3_for_the_store_4_for_the_output(tmp_path, monkeypatch):
    server, url = moto_server_process(INITIAL_NO_AUTH_ACTION_COUNT="0")  # moto checks credentials from here on
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        write_article(tmp_path / "store", "a.md")
        store = run_main("build", "-q", "-c", write_config(tmp_path, store="s3://some-bucket/articles/",
                                                         s3={"endpoint_url": url}))
        assert store.returncode == 3, store.stderr
        assert len(error_lines(store)) == 1 and "the credentials were refused" in store.stderr
        write_config(tmp_path, output="s3://some-bucket/feeds/", s3={"endpoint_url": url})
        output = run_cli("build", "-q", "-c", tmp_path / "config.yaml")
        assert output.returncode == 4, output.stderr
        assert len(error_lines(output)) == 1 and "the credentials were refused" in output.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_s3_settings_are_checked(tmp_path):
    result = run_main("build", "-c", write_config(tmp_path, output="s3://Bad_Bucket/feeds/"))
    assert result.returncode == 2 and "output: expected s3://bucket/prefix/" in result.stderr
    result = run_main("build", "-c", write_config(tmp_path, s3={"max_deletes": -1}))
    assert result.returncode == 2 and "s3.max_deletes" in result.stderr
    result = run_main("build", "-c", write_config(tmp_path, s3={"cache_control": "a\nb"}))
    assert result.returncode == 2 and "s3.cache_control" in result.stderr
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


def test_the_kubernetes_cronjob_runs_the_image_on_its_configmap_one_run_at_a_time(tmp_path):
    from tests.conftest import REPO
    documents = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/cronjob.yaml").read_text())}
    job = documents["CronJob"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "build" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["envFrom"] == [{"secretRef": {"name": documents["Secret"]["metadata"]["name"]}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/etc/publisher"]["configMap"]["name"] == documents["ConfigMap"]["metadata"]["name"]
    config = tmp_path / "config.yaml"
    config.write_text(documents["ConfigMap"]["data"]["config.yaml"])
    loaded = load_config(config)
    assert mounts[str(loaded.state)]["persistentVolumeClaim"]["claimName"] == documents[
        "PersistentVolumeClaim"]["metadata"]["name"]
    assert str(loaded.output).startswith("s3://") and loaded.store_bucket is not None
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and 'ENTRYPOINT ["publisher"]' in dockerfile
