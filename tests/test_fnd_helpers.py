"""Shared helpers of the foundation tests (no tests here): an async HTTP client (treq)."""

from __future__ import annotations

import functools
import json
from typing import Any, Optional, Tuple

import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool


def async_test(f):
    @functools.wraps(f)
    def wrapper(self):
        return defer.ensureDeferred(f(self))
    return wrapper


async def gather_all(deferreds):
    """Wait for every Deferred (so no request is left in flight), then raise the first failure."""
    results = await defer.DeferredList(list(deferreds), consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [value for _, value in results]


class Client:
    def __init__(self, url: str, max_connections: int = 20):
        self.url = url
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max_connections
        self.pool.retryAutomatically = False

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: Optional[str] = "application/json",
                      raw: Optional[bytes] = None) -> Tuple[int, bytes, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {}
        if content_type:
            headers["Content-Type"] = [content_type]
        resp = await treq.request(method, self.url + path, data=data, headers=headers,
                                  pool=self.pool)
        content = await treq.content(resp)
        return resp.code, content, resp.headers

    async def ok(self, method: str, path: str, body: Any = None, **kw) -> Any:
        code, content, _ = await self.request(method, path, body, **kw)
        if code != 200:
            raise AssertionError(f"{method} {path}: {code} {content!r}")
        assert content.endswith(b"\n"), content
        return json.loads(content)

    async def err(self, method: str, path: str, body: Any = None, **kw) -> str:
        code, content, headers = await self.request(method, path, body, **kw)
        if code != 500:
            raise AssertionError(f"{method} {path}: expected 500, got {code} {content!r}")
        assert headers.getRawHeaders(b"content-type") == [b"text/plain; charset=utf-8"]
        return content.decode()

    def close(self):
        return self.pool.closeCachedConnections()


async def master_on_redis(test: Any, config: Any = None) -> Tuple[Any, Any, Any]:
    """(store, master, plugin routes): the netmaster's semantics on a real redis-server of
    the test's own, with its defaults written; everything stopped at the test's cleanup."""
    from contiv_sdn.api.plugin import PluginRoutes
    from contiv_sdn.master.config import MasterConfig
    from contiv_sdn.master.core import Master
    from contiv_sdn.store import Store
    from contiv_sdn.testing import RedisServer, require_binary

    require_binary("redis-server")
    redis = RedisServer().start()
    test.addCleanup(redis.stop)
    store = await Store.connect(redis.url)
    test.addCleanup(lambda: defer.ensureDeferred(store.close()))
    master = Master(store, config if config is not None else MasterConfig())
    await master.ensure_defaults()
    return store, master, PluginRoutes(master, lambda: "127.0.0.1:9999")


async def post_object(master: Any, kind: str, key: str, body: dict) -> None:
    """Create an object as the REST API does: decoded and validated by its model type."""
    from contiv_sdn.model import TYPES, decode, validate

    spec = TYPES[kind]
    await master.post(kind, key, validate(spec, decode(spec, json.dumps(body).encode()), key))
