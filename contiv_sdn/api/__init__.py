"""The netmaster's HTTP API (Klein): Contiv's ``/api/v1`` model routes, the
``/plugin/*`` calls the agents use, ``/version`` and ``/info``."""

from contiv_sdn.api.app import NetmasterAPI, make_resource

__all__ = ["NetmasterAPI", "make_resource"]
