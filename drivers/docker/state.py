"""What the Docker driver must remember across a netplugin restart (one small JSON file).

* **Docker networks → placement.**  Docker identifies networks by its own ids;
  ``CreateNetwork`` tells us the placement once, later calls only carry the id.
  (Lost or unknown ids are recovered from Docker's network inspect, see the
  driver; this file just avoids asking Docker during container start-up.)
* **Addresses handed out but not yet bound** (keyed by placement ``tenant:network:group``,
  the group matters for an endpoint group's own address pool).  Docker's IPAM ``RequestAddress``
  comes before ``CreateEndpoint``; once the endpoint exists the netmaster knows
  the address belongs to it and releases it with the endpoint.  Docker then
  still calls ``ReleaseAddress``, and releasing again could free an address
  that another host reserved in between.  So we release only addresses that
  are still *pending* (reserved, never bound): a failed container start.

Writes are atomic (temp file + rename) and tiny; they happen on the reactor
thread, like Twisted's own log file writes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Dict, Optional

from twisted.logger import Logger

from drivers.docker.names import Placement

log = Logger()


class DriverState:
    def __init__(self, path: Optional[str]):
        self.path = path
        self.networks: Dict[str, Dict[str, Any]] = {}
        self.pending: Dict[str, Dict[str, float]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warn("ignoring unreadable docker driver state {path}: {err}", path=self.path,
                     err=e)
            return
        if isinstance(data, dict):
            nets = data.get("networks")
            pend = data.get("pending")
            self.networks = nets if isinstance(nets, dict) else {}
            self.pending = pend if isinstance(pend, dict) else {}

    def save(self) -> None:
        if not self.path:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".docker-driver")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"networks": self.networks, "pending": self.pending}, f,
                          sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    # -- networks --------------------------------------------------------------------
    def network(self, network_id: str) -> Optional[Placement]:
        entry = self.networks.get(network_id)
        if not entry:
            return None
        return Placement(entry["tenant"], entry["network"], entry.get("group", ""))

    def network_info(self, network_id: str) -> Dict[str, Any]:
        return dict(self.networks.get(network_id) or {})

    def set_network(self, network_id: str, p: Placement, **extra: Any) -> None:
        entry = {"tenant": p.tenant, "network": p.network, "group": p.group}
        entry.update({k: v for k, v in extra.items() if v is not None})
        if self.networks.get(network_id) != entry:
            self.networks[network_id] = entry
            self.save()

    def drop_network(self, network_id: str) -> None:
        if self.networks.pop(network_id, None) is not None:
            self.save()

    def prune_networks(self, existing: "set") -> None:
        """Forget Docker networks that no longer exist (removed while we were down)."""
        gone = [nid for nid in self.networks if nid not in existing]
        for nid in gone:
            del self.networks[nid]
        if gone:
            self.save()

    # -- pending addresses ----------------------------------------------------------------
    def add_pending(self, key: str, ip: str) -> None:
        self.pending.setdefault(key, {})[ip] = time.time()
        self.save()

    def is_pending(self, key: str, ip: str) -> bool:
        return ip in self.pending.get(key, {})

    def stale_pending(self, max_age: float) -> list:
        """``[(key, ip)]`` reserved more than ``max_age`` seconds ago."""
        cutoff = time.time() - max_age
        return [(key, ip) for key, addrs in sorted(self.pending.items())
                for ip, since in sorted(addrs.items()) if since < cutoff]

    def drop_pending(self, key: str, ip: str) -> bool:
        addrs = self.pending.get(key)
        if not addrs or ip not in addrs:
            return False
        del addrs[ip]
        if not addrs:
            del self.pending[key]
        self.save()
        return True
