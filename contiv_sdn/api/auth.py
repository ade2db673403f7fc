"""Authentication and authorization of the netmaster's REST API (``--auth``).

Contiv put a separate HTTPS ``auth_proxy`` in front of netmaster; its netctl
logs in with ``POST /api/v1/auth_proxy/login/`` and ``{"username",
"password"}``, keeps the ``{"token": ...}`` answer in ``~/.netctl/config.json``
and sends ``X-Auth-Token`` on every later request.  Here the netmaster speaks
that protocol itself (no second process to deploy), so Contiv's netctl and
ours both work unchanged.

Design choices, and why:

* **Users live in Redis** (``contiv:auth:users``, one JSON record per user),
  not in a file, so every netmaster sharing a Redis accepts the same users
  and a ``netctl user rm`` takes effect everywhere at once.  Passwords are
  stored as salted ``scrypt`` hashes (:func:`hashlib.scrypt`, i.e. OpenSSL's:
  a maintained implementation with no new dependency), computed in a thread
  because a slow hash on the reactor would stall every other request.
* **Tokens are random** (256 bits), handed out once, and stored only as their
  SHA-256 under ``contiv:auth:token:<digest>`` with a Redis expiry: whoever
  can read Redis cannot replay a token, expiry needs no sweeper, and
  revocation (logout) is one ``DEL``.  A token names its user and the user's
  *generation*; removing a user, changing its role or password bumps or
  drops the generation, which revokes every token issued before.
* **Roles**: ``admin`` may do everything; ``ops`` may read (GET: lists,
  objects, inspect, version, services) and nothing else, not even the user
  list; ``node`` is a host agent (netplugin), a user named after its host: it
  may make the ``/plugin/*`` calls and read networks and endpoint groups, and
  the calls themselves check that it acts only on its own host (registers
  only the host of its name, creates, updates and deletes only endpoints
  homed there: :mod:`contiv_sdn.api.plugin`).  :data:`ROLES` is the whole set.
* **Throttling** of failed logins is per source address *and* per user name,
  in memory: after :attr:`Throttle.limit` failures in a row the key is
  locked out for a delay that doubles with each further failure (capped);
  while locked, even a correct password is refused with ``429`` and a
  ``Retry-After``, so guessing costs time whichever way it is spread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import threads
from twisted.logger import Logger

from contiv_sdn.api.http import HttpError
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import STR, Struct

log = Logger()

#: The roles a user may have: ``admin`` (everything), ``ops`` (read-only), ``node``
#: (a host agent named after its host: the plugin calls for that host only).
ROLES = ("admin", "ops", "node")
USERS_KEY = "contiv:auth:users"
TOKEN_PREFIX = "contiv:auth:token:"

LOGIN_PATH = "/api/v1/auth_proxy/login/"
LOGOUT_PATH = "/api/v1/auth_proxy/logout/"
USERS_PATH = "/api/v1/auth_proxy/local_users/"

#: Default token lifetime: a working day, so an operator logs in once a day.
DEFAULT_TOKEN_TTL = 8 * 3600.0

LOGIN_REQUEST = Struct("LoginRequest", [("username", STR), ("password", STR)])
#: ``POST local_users/`` (create or replace) and ``PATCH local_users/<name>/``.
USER_REQUEST = Struct("LocalUser", [("username", STR), ("password", STR), ("role", STR)])

#: User names: what a shell and a log line can carry without quoting.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: Shortest password accepted for a new user.
MIN_PASSWORD = 8
#: Longest password hashed (scrypt's cost does not depend on it, but the body does).
MAX_PASSWORD = 1024

# scrypt cost: N=2**15, r=8 (32 MiB, tens of milliseconds per hash) — the
# interactive-login setting of the scrypt paper, raised for current CPUs.
_SCRYPT_N_LOG2 = 15
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n_log2: int = _SCRYPT_N_LOG2) -> str:
    """``scrypt$<log2 N>$<r>$<p>$<salt>$<hash>`` (base64), with a fresh salt.

    Blocking (tens of milliseconds): call it in a thread from the reactor."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << n_log2, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=_HASH_BYTES)
    return f"scrypt${n_log2}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare); a record
    that does not parse never matches.  Blocking, like :func:`hash_password`."""
    try:
        scheme, n_log2, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not 10 <= int(n_log2) <= 20:
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                             n=1 << int(n_log2), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_dummy: List[str] = []


def _dummy_hash() -> str:
    """Compared against when the user does not exist, so an unknown name costs
    the same time as a wrong password (no user enumeration by timing).  Made
    on first use (in the login thread), not at import."""
    if not _dummy:
        _dummy.append(hash_password(secrets.token_hex(8)))
    return _dummy[0]


def _check(stored: Optional[str], password: str) -> bool:
    return verify_password(stored if stored is not None else _dummy_hash(), password)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Unauthorized(HttpError):
    """401: no token, or one that is unknown, expired or revoked."""

    def __init__(self, why: str):
        super().__init__(f"401 Unauthorized: {why}; log in with `netctl --netmaster "
                         f"https://HOST:PORT login` (or POST {LOGIN_PATH}) and send the "
                         f"token in the X-Auth-Token header", 401)


def node_may(user: str) -> str:
    """What a ``node`` user may do, for its refusals."""
    return (f"a node may only register host {user}, create, update and delete endpoints on "
            f"host {user}, allocate and release addresses, map swarm docker networks, and "
            f"read networks and endpoint groups")


class Forbidden(HttpError):
    """403: the token is valid but its role may not do this."""

    def __init__(self, user: str, role: str, what: str):
        if role == "node":
            super().__init__(f"403 Forbidden: user {user!r} (role node) may not {what}: "
                             f"{node_may(user)}", 403)
            return
        super().__init__(f"403 Forbidden: user {user!r} (role {role}) may not {what}; "
                         f"ask an admin", 403)


class Throttled(HttpError):
    """429: too many failed logins from this address or for this user."""

    def __init__(self, retry_after: float):
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"429 Too Many Requests: too many failed logins; try again in "
                         f"{self.retry_after}s", 429)


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the user, its role, and the token's digest."""

    user: str
    role: str
    digest: str = ""


class Throttle:
    """Failed-login counters keyed by source address and by user name.

    ``limit`` failures in a row are free; each one after that locks the key
    for ``base`` seconds, doubled per further failure, at most ``cap``.  A
    success clears the user's counter (not the address's: one right password
    must not wash out a spray of guesses from the same address).  Entries
    expire after ``cap`` seconds without failures, and the table is bounded.
    """

    MAX_KEYS = 10000

    def __init__(self, limit: int = 5, base: float = 1.0, cap: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.base = base
        self.cap = cap
        self.clock = clock
        #: key -> (failures, locked until, last failure)
        self._state: Dict[str, Tuple[int, float, float]] = {}

    def wait(self, keys: List[str]) -> float:
        """Seconds until all ``keys`` may try again (0: now)."""
        now = self.clock()
        left = 0.0
        for key in keys:
            state = self._state.get(key)
            if state is not None:
                left = max(left, state[1] - now)
        return left

    def failed(self, keys: List[str]) -> None:
        now = self.clock()
        if len(self._state) >= self.MAX_KEYS:
            self._expire(now)
        for key in keys:
            count, until, _ = self._state.get(key, (0, 0.0, now))
            count += 1
            if count > self.limit:
                until = now + min(self.cap, self.base * 2 ** min(30, count - self.limit - 1))
            self._state[key] = (count, until, now)

    def succeeded(self, key: str) -> None:
        self._state.pop(key, None)

    def _expire(self, now: float) -> None:
        for key, (_, until, last) in list(self._state.items()):
            if until <= now and now - last > self.cap:
                del self._state[key]
        while len(self._state) >= self.MAX_KEYS:  # still full: drop the oldest
            oldest = min(self._state, key=lambda k: self._state[k][2])
            del self._state[oldest]


#: What a ``node`` may call: the agents' plugin calls (each checks the host itself)...
_NODE_CALLS = re.compile(r"/plugin/(allocAddress|releaseAddress|createEndpoint|deleteEndpoint|"
                         r"updateEndpoint|registerHost|createDocknet|deleteDocknet)")
#: ...and the reads its agent and Docker driver make (the lists too: the swarm driver's
#: ``resolve_tag`` finds the network or group whose cfgdTag a docker network names).
_NODE_READS = re.compile(r"/api/v1/(inspect/)?(networks|endpointGroups)/[^/]+/|"
                         r"/api/v1/(networks|endpointGroups)/|/version")


def may(role: str, method: str, path: str) -> bool:
    """The role check: ``admin`` everything, ``ops`` reads outside user management,
    ``node`` the plugin calls (whose handlers check the host) and its reads."""
    if role == "admin":
        return True
    if role == "ops":
        return method in ("GET", "HEAD") and not path.startswith(USERS_PATH)
    if role == "node":
        if method == "POST":
            return _NODE_CALLS.fullmatch(path) is not None
        return method in ("GET", "HEAD") and _NODE_READS.fullmatch(path) is not None
    return False


def _user_json(record: dict) -> dict:
    """A user as the API shows it (never the hash)."""
    return {"username": record["name"], "role": record["role"]}


class Auth:
    """Users, tokens and throttling on a :class:`~contiv_sdn.store.Store`.

    ``token_ttl`` is the life of a token in seconds; ``throttle`` counts
    failed logins.  Redis calls go through the store's bounded calls, so an
    unavailable Redis is a 503 like any other request's.
    """

    def __init__(self, store, token_ttl: float = DEFAULT_TOKEN_TTL,
                 throttle: Optional[Throttle] = None):
        self.store = store
        self.token_ttl = token_ttl
        self.throttle = throttle or Throttle()

    # -- users ------------------------------------------------------------
    async def _user(self, name: str) -> Optional[dict]:
        raw = await self.store.hget_raw(USERS_KEY, name)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            log.error("user record {name} in Redis is not JSON; ignoring it", name=name)
            return None
        return record if isinstance(record, dict) else None

    async def users(self) -> List[dict]:
        raw = await self.store.hgetall_raw(USERS_KEY)
        out = []
        for name in sorted(raw):
            try:
                out.append(_user_json(json.loads(raw[name])))
            except (ValueError, KeyError, TypeError):
                log.error("user record {name} in Redis is not valid; ignoring it", name=name)
        return out

    async def user(self, name: str) -> dict:
        record = await self._user(name)
        if record is None:
            raise HttpError(f"user {name!r} not found", 404)
        return _user_json(record)

    @staticmethod
    def _check_new(name: str, password: Optional[str], role: Optional[str]) -> None:
        if not _USER_NAME.fullmatch(name):
            raise HttpError(f"invalid user name {name!r}: use 1-64 letters, digits and "
                            f"'._@-', starting with a letter or digit", 400)
        if role is not None and role not in ROLES:
            raise HttpError(f"invalid role {role!r}: must be one of {', '.join(ROLES)}", 400)
        if role == "node" and "@" in name:
            raise HttpError(f"invalid node user name {name!r}: a node user is named after "
                            f"its host (the agent's --host), which has no '@'", 400)
        if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise HttpError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} "
                            f"characters long", 400)

    async def set_user(self, name: str, password: Optional[str], role: Optional[str],
                       create_only: bool = False) -> dict:
        """Create a user or change its password/role.  Every change bumps the
        user's generation, which revokes the tokens issued before it."""
        self._check_new(name, password, role)
        existing = await self._user(name)
        if existing is None and (password is None or role is None):
            if password is None:
                raise HttpError(f"user {name!r} does not exist: a new user needs a "
                                f"password", 400)
            role = role or "ops"
        if existing is not None and create_only:
            raise HttpError(f"user {name!r} already exists", 409)
        record = dict(existing or {"name": name, "gen": 0})
        record["name"] = name
        record["gen"] = int(record.get("gen", 0)) + 1
        if role is not None:
            record["role"] = role
        if password is not None:
            record["hash"] = await threads.deferToThread(hash_password, password)
        text = json.dumps(record, sort_keys=True)
        if create_only:
            if not await self.store.hsetnx_raw(USERS_KEY, name, text):
                raise HttpError(f"user {name!r} already exists", 409)
        else:
            await self.store.hset_raw(USERS_KEY, name, text)
        log.info("user {name} {what} (role {role})", name=name,
                 what="created" if existing is None else "changed", role=record["role"])
        return _user_json(record)

    async def remove_user(self, name: str) -> str:
        """Remove a user (its tokens die with it).  The last admin cannot be
        removed: nobody could manage users afterwards."""
        record = await self._user(name)
        if record is None:
            raise HttpError(f"user {name!r} not found", 404)
        if record.get("role") == "admin":
            admins = [u for u in await self.users() if u["role"] == "admin"]
            if len(admins) <= 1:
                raise HttpError(f"user {name!r} is the last admin; add another admin "
                                f"before removing it", 409)
        await self.store.hdel_raw(USERS_KEY, name)
        log.info("user {name} removed", name=name)
        return name

    async def ensure_admin(self, password: Optional[str], state_dir: str) -> Optional[str]:
        """With no user at all, create ``admin``: with ``password`` if given,
        else a generated one written to ``<state_dir>/admin.password`` (0600).
        Returns the path of that file, or None if nothing was generated."""
        if await self.store.hgetall_raw(USERS_KEY):
            return None
        path = None
        if password is None:
            password = secrets.token_urlsafe(18)
            path = os.path.join(state_dir, "admin.password")
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        try:
            await self.set_user("admin", password, "admin", create_only=True)
        except HttpError as e:
            if e.status != 409:  # another netmaster made it first: fine
                raise
            return None
        if path:
            log.warn("no users yet: created user 'admin' with the password in {path}; log in "
                     "with `netctl --netmaster https://HOST:PORT login` and change it",
                     path=path)
        return path

    # -- tokens -------------------------------------------------------------
    async def login(self, body: bytes, peer: str) -> dict:
        """Contiv's login: ``{"username","password"}`` → ``{"token"}``; 401 for
        bad credentials, 429 while throttled."""
        try:
            req = LOGIN_REQUEST.load(body)
        except DecodeError as e:
            raise HttpError(str(e), 400)
        name = req["username"]
        keys = ["addr:" + peer, "user:" + name[:128]]
        wait = self.throttle.wait(keys)
        if wait > 0:
            raise Throttled(wait)
        record = await self._user(name) if _USER_NAME.fullmatch(name) else None
        stored = str(record.get("hash", "")) if record else None
        ok = await threads.deferToThread(_check, stored, req["password"][:MAX_PASSWORD])
        if not ok or record is None:
            self.throttle.failed(keys)
            log.info("login refused for user {name} from {peer}", name=name[:64], peer=peer)
            raise HttpError("401 Unauthorized: bad username or password", 401)
        self.throttle.succeeded(keys[1])
        token = secrets.token_urlsafe(32)
        grant = {"user": name, "role": record["role"], "gen": record.get("gen", 0),
                 "issued": round(time.time(), 3)}
        await self.store.set_raw(TOKEN_PREFIX + token_digest(token), json.dumps(grant),
                                 ttl=self.token_ttl)
        log.info("user {name} logged in from {peer}", name=name, peer=peer)
        return {"token": token}

    async def authenticate(self, token: Optional[bytes]) -> Principal:
        """The principal behind an ``X-Auth-Token`` value, or :class:`Unauthorized`."""
        if not token:
            raise Unauthorized("this netmaster requires authentication")
        text = token.decode("latin-1").strip()
        digest = token_digest(text)
        raw = await self.store.get_raw_key(TOKEN_PREFIX + digest)
        if raw is None:
            raise Unauthorized("the token is unknown, expired or revoked")
        try:
            grant = json.loads(raw)
            name, gen = grant["user"], grant["gen"]
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("the token is unknown, expired or revoked")
        record = await self._user(name)
        if record is None or record.get("gen") != gen:
            raise Unauthorized("the token was revoked (its user was removed or changed)")
        return Principal(name, str(record.get("role", "")), digest)

    async def logout(self, principal: Principal) -> dict:
        """Revoke the token the request came with."""
        await self.store.del_raw(TOKEN_PREFIX + principal.digest)
        log.info("user {name} logged out", name=principal.user)
        return {}


__all__ = ["Auth", "Principal", "Throttle", "Unauthorized", "Forbidden", "Throttled", "ROLES",
           "may", "node_may", "hash_password", "verify_password", "LOGIN_PATH", "LOGOUT_PATH",
           "USERS_PATH", "DEFAULT_TOKEN_TTL", "USER_REQUEST"]
