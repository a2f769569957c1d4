"""The stages of a build, in the order build.py calls them: scan the store (store, simple_yaml;
mirror for a bucket store), read what changed (reading; the article model: articles, body,
urls, xmltext), select the feeds (catalog, selection, archives), probe enclosures (probe),
render (render, render_pool, pages, precompress), write (targets: writer for a folder,
bucket, lease and s3 for a bucket) and notify (websub)."""
