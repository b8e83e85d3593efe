"""Uploads a file to Hangar's tus endpoint with tuspy (the Python tus client), the way a script
would: chunked, with checksums, interrupted after a few chunks, then resumed by a new client that
finds the upload URL in its URL store (its fingerprint of the file).

usage: tuspy_client.py ENDPOINT FILE STORE CHUNK_SIZE STOP_AFTER_CHUNKS HEADER:VALUE...
Prints one JSON line: {"url": ..., "interrupted_at": ..., "resumed_from": ..., "final_offset": ...}
"""
import json
import os
import sys

from tusclient import client
from tusclient.storage import filestorage


def main():
    endpoint, path, store, chunk, stop_after = sys.argv[1:6]
    headers = dict(h.split(":", 1) for h in sys.argv[6:])
    chunk, stop_after = int(chunk), int(stop_after)
    size = os.path.getsize(path)

    def uploader():
        c = client.TusClient(endpoint, headers=headers)
        return c.uploader(
            file_path=path,
            chunk_size=chunk,
            store_url=True,
            url_storage=filestorage.FileStorage(store),
            upload_checksum=True,
            metadata={"filename": os.path.basename(path), "filetype": "application/octet-stream"},
        )

    first = uploader()
    assert first.url is None, "a fresh store has no URL for this file"
    first.upload(stop_at=stop_after * chunk)
    interrupted_at = first.offset
    url = first.url
    del first  # the first client is gone, as if the script had been killed

    second = uploader()
    assert second.url == url, f"the URL store gave {second.url!r}, expected {url!r}"
    resumed_from = second.offset  # from a HEAD request to the server
    second.upload()
    # Ask the server, not the client, where the upload stands.
    final_offset = second.get_offset()
    print(json.dumps({"url": url, "size": size, "interrupted_at": interrupted_at,
                      "resumed_from": resumed_from, "final_offset": final_offset}))


if __name__ == "__main__":
    main()
