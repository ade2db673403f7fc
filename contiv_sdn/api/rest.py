"""``/api/v1``: Contiv's generated model routes.

POST and PUT are the same create-or-update with the key taken from the URL;
any Content-Type is accepted (Contiv's Python client sends form-encoded
headers with a JSON body); field names match case-insensitively and ``null``
is a zero value (the model's Go-compatible decoder); DELETE answers the key
as a JSON string.
"""

from __future__ import annotations

from typing import Any

from contiv_sdn.api.http import HttpError
from contiv_sdn.master import Master
from contiv_sdn.model import (
    ModelError,
    TypeSpec,
    decode,
    inspect_to_wire,
    to_wire,
    validate,
)


class ModelRoutes:
    def __init__(self, master: Master):
        self.master = master

    async def list(self, spec: TypeSpec) -> Any:
        return [to_wire(spec, o) for o in await self.master.list(spec.name)]

    async def get(self, spec: TypeSpec, key: str) -> Any:
        return to_wire(spec, await self.master.get(spec.name, key))

    async def post(self, spec: TypeSpec, key: str, body: bytes) -> Any:
        try:
            obj = validate(spec, decode(spec, body), key)
        except ModelError as e:
            raise HttpError(str(e))
        return to_wire(spec, await self.master.post(spec.name, key, obj))

    async def delete(self, spec: TypeSpec, key: str) -> Any:
        await self.master.delete(spec.name, key)
        return key

    async def inspect(self, spec: TypeSpec, key: str) -> Any:
        if not spec.has_config:  # endpoint: oper only
            return inspect_to_wire(spec, None, await self.master.inspect_endpoint(key))
        config, oper = await self.master.inspect(spec.name, key)
        return inspect_to_wire(spec, config, oper)
