"""What each netctl command does: requests, client-side checks, output.

Each function follows the matching one in Contiv's ``netctl/netctl.go``:
the same argument checks and messages, the same request sequence (e.g. every
``ls`` first GETs the tenant so a missing tenant is an error), the same
"Creating ..."/"Deleting ..." lines (deletes announce themselves *before*
the request, as Contiv did), the same tables (Go tabwriter, minwidth 0,
padding 2) and ``-j`` as ``json.MarshalIndent``. Where Contiv was plainly
broken the fix is marked "Deviation" below.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import re
from typing import Any, Callable, Optional

from contiv_sdn.model.gojson import marshal_indent
from contiv_sdn.netctl.client import ClientError, ContivClient, RequestError
from contiv_sdn.netctl.context import (EXIT_HELP, EXIT_INVALID, EXIT_IO, EXIT_REQUEST, Context,
                                       client_version, config_path, version_text)
from contiv_sdn.netctl.tabwriter import tabwrite
from contiv_sdn.netctl.wire import go_int, go_list, go_str, go_v


# -- helpers ----------------------------------------------------------------

def _need_args(ctx: Context, count: int, message: str) -> None:
    if len(ctx.args) != count:
        ctx.fail(EXIT_HELP, message, show_help=True)


def _no_args(ctx: Context) -> None:
    _need_args(ctx, 0, "More arguments than required")


def _dump_json(ctx: Context, value: Any) -> None:
    ctx.out(marshal_indent(value) + "\n")


def _table(ctx: Context, text: str, tabwidth: int = 2) -> None:
    ctx.out(tabwrite(text, minwidth=0, tabwidth=tabwidth, padding=2, padchar=" "))


def _row(*cells: Any) -> str:
    return "\t".join(go_v(c) if not isinstance(c, str) else c for c in cells) + "\n"


def _tenant_items(ctx: Context, collection: str, tenant: Optional[str] = None) -> list[Any]:
    """GET the tenant (so a missing tenant fails), then the collection,
    filtered to that tenant unless -a."""
    tenant = ctx.flags.string("tenant") if tenant is None else tenant
    client = ctx.client()
    client.get_object("tenants", tenant)
    items = client.list(collection)
    if ctx.flags.bool("all"):
        return items
    return [item for item in items if go_str(item, "tenantName") == tenant]


def _print_list(ctx: Context, items: list[Any], name_field: str,
                table: Callable[[list[Any]], str], tabwidth: int = 2) -> None:
    if ctx.flags.bool("json"):
        _dump_json(ctx, items)
    elif ctx.flags.bool("quiet"):
        ctx.out("".join(go_str(item, name_field) + "\n" for item in items))
    else:
        _table(ctx, table(items), tabwidth)


def _inspect(ctx: Context, collection: str, key: str) -> None:
    _dump_json(ctx, ctx.client().inspect(collection, key))


def _parse_ip(text: str) -> bool:
    """net.ParseIP: a dotted IPv4 or an IPv6 address (no zone, no prefix)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


def _parse_cidr(text: str) -> bool:
    """net.ParseCIDR: an address, "/", a decimal prefix length that fits."""
    address, sep, length = text.partition("/")
    if not sep or not re.fullmatch(r"[0-9]+", length) or not _parse_ip(address):
        return False
    return int(length) <= (128 if ":" in address else 32)


# -- version / login ------------------------------------------------------------

def show_version(ctx: Context) -> None:
    _no_args(ctx)
    # Contiv fetched /version with a bare HTTP client: no URL check, no token.
    client = ContivClient(ctx.netmaster, insecure=ctx.insecure)
    resp = client.request("GET", "/version", auth=False)
    if resp.status != 200:
        ctx.stderr.write(resp.body.decode("utf-8", "replace"))
        ctx.fail(EXIT_INVALID, f"Status {resp.status} in request response")
    try:
        info = json.loads(resp.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        ctx.fail(EXIT_REQUEST, str(exc))
    if not isinstance(info, dict):
        info = {}
    ctx.out("Client Version:\n" + version_text(client_version()) + "\n"
            + "Server Version:\n" + version_text(info))


def login(ctx: Context) -> None:
    _no_args(ctx)
    if not ctx.netmaster.startswith("https://"):
        ctx.out("login requires a https auth_proxy URL\n")
        ctx.fail(EXIT_INVALID, "", show_help=True)
    # Extension: --username and NETCTL_PASSWORD for scripts (Contiv only prompted).
    username = ctx.flags.string("username") if ctx.flags.is_set("username") else ""
    if not username:
        ctx.out("Username: ")
        ctx.stdout.flush()
        line = ctx.stdin.readline()
        if not line:
            ctx.fail(EXIT_IO, "EOF")
        username = line.strip()
    if not username:
        ctx.fail(EXIT_INVALID, "you must specify a username")
    password = _password(ctx, "Password: ")
    client = ctx.client()
    try:
        resp = client.login(username, password)
    except RequestError as exc:
        ctx.fail(EXIT_IO, str(exc))
    if resp.status != 200:
        ctx.out("Login failed: ")
        if resp.status == 401:
            ctx.out("Bad username or password.\n")
        else:
            ctx.out(f"unexpected response code ({resp.status})\n\n")
            ctx.stderr.write(resp.body.decode("utf-8", "replace"))
        ctx.fail(EXIT_INVALID, "")
    ctx.out("Login succeeded.\n")
    path = config_path(ctx.environ)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(resp.body)
    except OSError as exc:
        ctx.fail(EXIT_IO, str(exc))


PASSWORD_ENV = "NETCTL_PASSWORD"


def _password(ctx: Context, prompt: str) -> str:
    """The password from $NETCTL_PASSWORD (scripts), else a prompt on a
    terminal, else the next line of stdin (`printf 'user\npass\n' | netctl login`)."""
    if ctx.environ.get(PASSWORD_ENV):
        return ctx.environ[PASSWORD_ENV]
    try:
        if ctx.stdin.isatty():
            return getpass.getpass(prompt, stream=ctx.stdout)
        ctx.out(prompt + "\n")
        line = ctx.stdin.readline()
        if not line:
            raise EOFError("EOF")
        return line.rstrip("\r\n")
    except (EOFError, OSError) as exc:
        ctx.fail(EXIT_IO, str(exc) or "EOF")


# -- user (extension: the netmaster's --auth users, admin only) ---------------------
USERS = "/api/v1/auth_proxy/local_users/"


def _user_call(ctx: Context, method: str, path: str, body: Optional[dict] = None) -> Any:
    client = ctx.client()
    data = None if body is None else json.dumps(body).encode("utf-8")
    resp = client.request(method, path, data)
    if resp.status != 200:
        # 400/404/409 carry the netmaster's reason: show it, not just the status line
        text = resp.body.decode("utf-8", "replace").strip()
        if resp.status in (400, 404, 409) and text:
            ctx.fail(EXIT_INVALID, text)
        client._check(method, resp)
    return client._json(resp)


def add_user(ctx: Context) -> None:
    _need_args(ctx, 1, "User name required")
    name = ctx.args[0]
    role = ctx.flags.string("role")
    password = _password(ctx, f"Password for {name}: ")
    _user_call(ctx, "POST", USERS, {"username": name, "password": password, "role": role})
    ctx.out(f"Creating user {name} (role {role})\n")


def set_user(ctx: Context) -> None:
    _need_args(ctx, 1, "User name required")
    name = ctx.args[0]
    body: dict = {}
    if ctx.flags.is_set("role"):
        body["role"] = ctx.flags.string("role")
    if ctx.flags.bool("password") or not body:
        body["password"] = _password(ctx, f"New password for {name}: ")
    _user_call(ctx, "PATCH", f"{USERS}{name}/", body)
    ctx.out(f"Updating user {name}\n")


def delete_user(ctx: Context) -> None:
    _need_args(ctx, 1, "User name required")
    name = ctx.args[0]
    ctx.out(f"Deleting user {name}\n")
    _user_call(ctx, "DELETE", f"{USERS}{name}/")


def list_users(ctx: Context) -> None:
    _no_args(ctx)
    users = _user_call(ctx, "GET", USERS) or []
    if ctx.flags.bool("json"):
        _dump_json(ctx, users)
        return
    if ctx.flags.bool("quiet"):
        ctx.out("".join(f"{go_str(u, 'username')}\n" for u in users))
        return
    ctx.out(tabwrite("User\tRole\n------\t------\n" + "".join(
        _row(go_str(u, "username"), go_str(u, "role")) for u in users), padding=2))


def logout(ctx: Context) -> None:
    """Revoke this login's token at the netmaster and forget it."""
    _no_args(ctx)
    client = ctx.client()
    if client.token:
        resp = client.request("POST", "/api/v1/auth_proxy/logout/", b"{}")
        if resp.status not in (200, 401):
            client._check("POST", resp)
    try:
        os.unlink(config_path(ctx.environ))
    except FileNotFoundError:
        pass
    except OSError as exc:
        ctx.fail(EXIT_IO, str(exc))
    ctx.out("Logged out.\n")


# -- tenant -----------------------------------------------------------------------

def create_tenant(ctx: Context) -> None:
    _need_args(ctx, 1, "Tenant name required")
    tenant = ctx.args[0]
    ctx.client().post_object("tenants", tenant, {"tenantName": tenant})
    ctx.out(f"Creating tenant: {tenant}\n")


def delete_tenant(ctx: Context) -> None:
    _need_args(ctx, 1, "Tenant name required")
    tenant = ctx.args[0]
    ctx.out(f"Deleting tenant {tenant}\n")
    ctx.client().delete_object("tenants", tenant)


def inspect_tenant(ctx: Context) -> None:
    _need_args(ctx, 1, "Tenant name required")
    _inspect(ctx, "tenants", ctx.args[0])


def list_tenants(ctx: Context) -> None:
    _no_args(ctx)
    items = ctx.client().list("tenants")

    def table(items: list[Any]) -> str:
        return ("Name\t\n------\t\n"
                + "".join(_row(go_str(t, "tenantName"), "") for t in items))
    _print_list(ctx, items, "tenantName", table, tabwidth=4)


# -- network ----------------------------------------------------------------------

def create_network(ctx: Context) -> None:
    _need_args(ctx, 1, "Network name required")
    f = ctx.flags
    subnet, gateway = f.string("subnet"), f.string("gateway")
    subnetv6, gatewayv6 = f.string("subnetv6"), f.string("gatewayv6")
    if not subnet:
        ctx.fail(EXIT_HELP, "Subnet is required", show_help=True)
    if gateway and not _parse_ip(gateway):
        ctx.fail(EXIT_HELP, "Invalid gateway - Enter in A.B.C.D format", show_help=True)
    if gatewayv6 and not _parse_ip(gatewayv6):
        ctx.fail(EXIT_HELP, "Invalid IPv6 gateway ", show_help=True)
    tenant, network = f.string("tenant"), ctx.args[0]
    ctx.client().post_object("networks", f"{tenant}:{network}", {
        "tenantName": tenant, "networkName": network, "encap": f.string("encap"),
        "subnet": subnet, "gateway": gateway, "ipv6Subnet": subnetv6,
        "ipv6Gateway": gatewayv6, "pktTag": f.int("pkt-tag"), "nwType": f.string("nw-type"),
        "cfgdTag": f.string("nw-tag"),
    })
    ctx.out(f"Creating network {tenant}:{network}\n")


def delete_network(ctx: Context) -> None:
    _need_args(ctx, 1, "Network name required")
    tenant, network = ctx.flags.string("tenant"), ctx.args[0]
    ctx.out(f"Deleting network {tenant}:{network}\n")
    ctx.client().delete_object("networks", f"{tenant}:{network}")


def inspect_network(ctx: Context) -> None:
    _need_args(ctx, 1, "Network name required")
    _inspect(ctx, "networks", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def list_networks(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "networks")

    def table(items: list[Any]) -> str:
        text = ("Tenant\tNetwork\tNw Type\tEncap type\tPacket tag\tSubnet\tGateway\t"
                "IPv6Subnet\tIPv6Gateway\tCfgd Tag \n"
                "------\t-------\t-------\t----------\t----------\t-------\t------\t"
                "----------\t-----------\t---------\n")
        for n in items:
            text += _row(go_str(n, "tenantName"), go_str(n, "networkName"), go_str(n, "nwType"),
                         go_str(n, "encap"), go_int(n, "pktTag"), go_str(n, "subnet"),
                         go_str(n, "gateway"), go_str(n, "ipv6Subnet"),
                         go_str(n, "ipv6Gateway"), go_str(n, "cfgdTag"))
        return text
    _print_list(ctx, items, "networkName", table)


# -- endpoint group ---------------------------------------------------------------

def create_group(ctx: Context) -> None:
    _need_args(ctx, 2, "Network and group name required")
    f = ctx.flags
    tenant, network, group = f.string("tenant"), ctx.args[0], ctx.args[1]
    ctx.client().post_object("endpointGroups", f"{tenant}:{group}", {
        "tenantName": tenant, "networkName": network, "groupName": group,
        "netProfile": f.string("networkprofile"), "ipPool": f.string("ip-pool"),
        "policies": f.string_slice("policy"),
        "extContractsGrps": f.string_slice("external-contract"),
        "cfgdTag": f.string("epg-tag"),
    })
    ctx.out(f"Creating EndpointGroup {tenant}:{group}\n")


def inspect_group(ctx: Context) -> None:
    _need_args(ctx, 1, "EndpointGroup name required")
    _inspect(ctx, "endpointGroups", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def delete_group(ctx: Context) -> None:
    _need_args(ctx, 1, "EndpointGroup name required")
    ctx.client().delete_object("endpointGroups", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def list_groups(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "endpointGroups")

    def table(items: list[Any]) -> str:
        text = ("Tenant\tGroup\tNetwork\tIP Pool\tCfgdTag\tPolicies\tNetwork profile\n"
                "------\t-----\t-------\t-------\t-------\t--------\t---------------\n")
        for g in items:
            text += _row(go_str(g, "tenantName"), go_str(g, "groupName"),
                         go_str(g, "networkName"), go_str(g, "ipPool"), go_str(g, "cfgdTag"),
                         ",".join(go_list(g, "policies")), go_str(g, "netProfile"))
        return text
    _print_list(ctx, items, "groupName", table)


# -- endpoint ---------------------------------------------------------------------

def inspect_endpoint(ctx: Context) -> None:
    _need_args(ctx, 1, "Endpoint name required")
    _inspect(ctx, "endpoints", ctx.args[0])


# -- policy and rules -------------------------------------------------------------

def create_policy(ctx: Context) -> None:
    _need_args(ctx, 1, "Policy name required")
    tenant, policy = ctx.flags.string("tenant"), ctx.args[0]
    ctx.client().post_object("policys", f"{tenant}:{policy}",
                             {"policyName": policy, "tenantName": tenant})
    ctx.out(f"Creating policy {tenant}:{policy}\n")


def delete_policy(ctx: Context) -> None:
    _need_args(ctx, 1, "Policy name required")
    tenant, policy = ctx.flags.string("tenant"), ctx.args[0]
    ctx.out(f"Deleting policy {tenant}:{policy}\n")
    ctx.client().delete_object("policys", f"{tenant}:{policy}")


def inspect_policy(ctx: Context) -> None:
    _need_args(ctx, 1, "Policy name required")
    _inspect(ctx, "policys", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def list_policies(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "policys")

    def table(items: list[Any]) -> str:
        return ("Tenant\tPolicy\n------\t------\n"
                + "".join(_row(go_str(p, "tenantName"), go_str(p, "policyName"))
                          for p in items))
    _print_list(ctx, items, "policyName", table)


def check_rule_flags(direction: str, flags: Any) -> Optional[str]:
    """Contiv's client-side rule checks; the error message, or None if fine.

    Note that ``--to-ip-address`` is allowed on incoming rules (Kubernetes
    network policy uses it), exactly as in Contiv."""
    s = flags.string
    if direction == "in":
        if s("to-group"):
            return "Cant specify to-group for incoming rule"
        if s("to-network"):
            return "Cant specify to-network for incoming rule"
        if s("from-group") and s("from-network"):
            return "Can't specify both from-group argument and -from-network "
    elif direction == "out":
        if s("from-group"):
            return "Cant specify from-group for outgoing rule"
        if s("from-network"):
            return "Cant specify from-network for outgoing rule"
        if s("from-ip-address"):
            return "Cant specify from-ip-address for outgoing rule"
        if s("to-group") and s("to-network"):
            return "Can't specify both -to-group and -to-network"
    else:
        return "Unknown direction"
    return None


def add_rule(ctx: Context) -> None:
    _need_args(ctx, 2, "Policy name and Rule ID required")
    f = ctx.flags
    problem = check_rule_flags(f.string("direction"), f)
    if problem:
        ctx.fail(EXIT_HELP, problem)
    tenant, policy, rule_id = f.string("tenant"), ctx.args[0], ctx.args[1]
    ctx.client().post_object("rules", f"{tenant}:{policy}:{rule_id}", {
        "tenantName": tenant, "policyName": policy, "ruleId": rule_id,
        "priority": f.int("priority"), "direction": f.string("direction"),
        "fromEndpointGroup": f.string("from-group"), "toEndpointGroup": f.string("to-group"),
        "fromNetwork": f.string("from-network"), "toNetwork": f.string("to-network"),
        "fromIpAddress": f.string("from-ip-address"), "toIpAddress": f.string("to-ip-address"),
        "protocol": f.string("protocol"), "port": f.int("port"), "action": f.string("action"),
    })


def delete_rule(ctx: Context) -> None:
    _need_args(ctx, 2, "Policy name and Rule ID required")
    tenant = ctx.flags.string("tenant")
    ctx.client().delete_object("rules", f"{tenant}:{ctx.args[0]}:{ctx.args[1]}")


def sort_rules(rules: list[Any], tenant: str, policy: str) -> list[Any]:
    """The policy's rules by ascending priority, list order kept within a
    priority (Contiv grouped by priority, then sort.Ints)."""
    mine = [r for r in rules
            if go_str(r, "tenantName") == tenant and go_str(r, "policyName") == policy]
    return sorted(mine, key=lambda r: go_int(r, "priority"))


def list_rules(ctx: Context) -> None:
    _need_args(ctx, 1, "Policy name required")
    tenant, policy = ctx.flags.string("tenant"), ctx.args[0]
    client = ctx.client()
    client.get_object("tenants", tenant)
    client.get_object("policys", f"{tenant}:{policy}")
    results = sort_rules(client.list("rules"), tenant, policy)
    if ctx.flags.bool("json"):
        _dump_json(ctx, results)
        return
    if ctx.flags.bool("quiet"):
        ctx.out("".join(go_str(r, "ruleId") + "\n" for r in results))
        return
    text = ("Incoming Rules:\n"
            "Rule\tPriority\tFrom EndpointGroup\tFrom Network\tFrom IpAddress\tTo IpAddress\t"
            "Protocol\tPort\tAction\n"
            "----\t--------\t------------------\t------------\t---------\t------------\t"
            "--------\t----\t------\n")
    for r in results:
        if go_str(r, "direction") == "in":
            text += _row(go_str(r, "ruleId"), go_int(r, "priority"),
                         go_str(r, "fromEndpointGroup"), go_str(r, "fromNetwork"),
                         go_str(r, "fromIpAddress"), go_str(r, "toIpAddress"),
                         go_str(r, "protocol"), go_int(r, "port"), go_str(r, "action"))
    text += ("Outgoing Rules:\n"
             "Rule\tPriority\tTo EndpointGroup\tTo Network\tTo IpAddress\tProtocol\tPort\t"
             "Action\n"
             "----\t--------\t----------------\t----------\t---------\t--------\t----\t"
             "------\n")
    for r in results:
        if go_str(r, "direction") == "out":
            text += _row(go_str(r, "ruleId"), go_int(r, "priority"),
                         go_str(r, "toEndpointGroup"), go_str(r, "toNetwork"),
                         go_str(r, "toIpAddress"), go_str(r, "protocol"), go_int(r, "port"),
                         go_str(r, "action"))
    _table(ctx, text)


# -- netprofile -------------------------------------------------------------------

def create_netprofile(ctx: Context) -> None:
    _need_args(ctx, 1, "Net profile name required")
    f = ctx.flags
    tenant, name = f.string("tenant"), ctx.args[0]
    ctx.client().post_object("netprofiles", f"{tenant}:{name}", {
        "burst": f.int("burst"), "bandwidth": f.string("bandwidth"), "DSCP": f.int("dscp"),
        "profileName": name, "tenantName": tenant,
    })
    ctx.out(f"Creating netprofile {tenant}:{name}\n")


def delete_netprofile(ctx: Context) -> None:
    _need_args(ctx, 1, "Net profile name required")
    ctx.client().delete_object("netprofiles", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def inspect_netprofile(ctx: Context) -> None:
    _need_args(ctx, 1, "Net profile name required")
    _inspect(ctx, "netprofiles", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def netprofile_rows(items: list[Any]) -> str:
    """Rows of ``netprofile ls``. The unit is derived as Contiv did: the
    first number, then Gbps/Mbps/Kbps by the first of g|G, m|M, k|K found
    (the unit carries over from the previous row when none is found), and a
    profile without bandwidth gets no burst column."""
    unit = ""
    text = ""
    for p in items:
        bandwidth = go_str(p, "bandwidth")
        if bandwidth:
            numbers = re.findall(r"[0-9]+", bandwidth)
            if any(ch in bandwidth for ch in "g|G"):
                unit = "Gbps"
            elif any(ch in bandwidth for ch in "m|M"):
                unit = "Mbps"
            elif any(ch in bandwidth for ch in "k|K"):
                unit = "Kbps"
            shown = (numbers[0] if numbers else "") + unit
            text += _row(go_str(p, "profileName"), go_str(p, "tenantName"), shown,
                         go_int(p, "DSCP"), go_int(p, "burst"))
        else:
            text += _row(go_str(p, "profileName"), go_str(p, "tenantName"), bandwidth,
                         go_int(p, "DSCP"))
    return text


def list_netprofiles(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "netprofiles")

    def table(items: list[Any]) -> str:
        return ("Name\tTenant\tBandwidth\tDSCP\tburst size\n"
                "------\t------\t---------\t--------\t----------\n" + netprofile_rows(items))
    _print_list(ctx, items, "profileName", table)


# -- global -----------------------------------------------------------------------

def show_global(ctx: Context) -> None:
    _no_args(ctx)
    items = ctx.client().list("globals")
    if ctx.flags.bool("json"):
        _dump_json(ctx, items)
        return
    text = ""
    for g in items:
        text += (f"Fabric mode: {go_str(g, 'networkInfraType')}\n"
                 f"Forward mode: {go_str(g, 'fwdMode')}\n"
                 f"ARP mode: {go_str(g, 'arpMode')}\n"
                 f"Vlan Range: {go_str(g, 'vlans')}\n"
                 f"Vxlan range: {go_str(g, 'vxlans')}\n"
                 f"Private subnet: {go_str(g, 'pvtSubnet')}\n")
    _table(ctx, text, tabwidth=4)


def inspect_global(ctx: Context) -> None:
    _no_args(ctx)
    _inspect(ctx, "globals", "global")


def set_global(ctx: Context) -> None:
    f = ctx.flags
    client = ctx.client()
    current = client.get_object("globals", "global")
    values = dict(current) if isinstance(current, dict) else {}
    for flag_name, field_name in (("fabric-mode", "networkInfraType"), ("vlan-range", "vlans"),
                                  ("vxlan-range", "vxlans"), ("fwd-mode", "fwdMode"),
                                  ("arp-mode", "arpMode"), ("private-subnet", "pvtSubnet")):
        value = f.string(flag_name)
        if value:
            _set_field(values, field_name, value)
    client.post_object("globals", "global", values)


def _set_field(values: dict[str, Any], name: str, value: Any) -> None:
    """Set a field, replacing any differently-cased spelling (Go decoding
    would have folded it into the same struct field)."""
    for key in [k for k in values if k.casefold() == name.casefold()]:
        del values[key]
    values[name] = value


# -- aci-gw -----------------------------------------------------------------------

def set_aci_gw(ctx: Context) -> None:
    f = ctx.flags
    client = ctx.client()
    try:
        current = client.get_object("aciGws", "aciGw")
    except ClientError:
        current = None  # Contiv ignored this error and started afresh.
    values = dict(current) if isinstance(current, dict) else {"name": "aciGw"}
    for flag_name, field_name in (("enforce-policies", "enforcePolicies"),
                                  ("include-common-tenant", "includeCommonTenant"),
                                  ("node-bindings", "nodeBindings"),
                                  ("path-bindings", "pathBindings"),
                                  ("phys-dom", "physicalDomain")):
        _set_field(values, field_name, f.string(flag_name))
    client.post_object("aciGws", "aciGw", values)


def show_aci_gw(ctx: Context) -> None:
    _no_args(ctx)
    items = ctx.client().list("aciGws")
    if ctx.flags.bool("json"):
        _dump_json(ctx, items)
        return
    text = ""
    for gw in items:
        text += (f"Path bindings: {go_str(gw, 'pathBindings')}\n"
                 f"Node bindings: {go_str(gw, 'nodeBindings')}\n"
                 f"Physical domain: {go_str(gw, 'physicalDomain')}\n"
                 f"Enforce policies: {go_str(gw, 'enforcePolicies')}\n"
                 f"Include Common-Tenant: {go_str(gw, 'includeCommonTenant')}\n")
    _table(ctx, text, tabwidth=4)


def inspect_aci_gw(ctx: Context) -> None:
    _no_args(ctx)
    _inspect(ctx, "aciGws", "aciGw")


# -- bgp --------------------------------------------------------------------------

def add_bgp(ctx: Context) -> None:
    if len(ctx.args) < 1:
        ctx.fail(EXIT_HELP, "Host name required", show_help=True)
    f = ctx.flags
    hostname = ctx.args[0]
    routerip, asid = f.string("router-ip"), f.string("as")
    neighbor_as, neighbor = f.string("neighbor-as"), f.string("neighbor")
    if not _parse_cidr(routerip):
        ctx.fail(EXIT_HELP, "Wrong CIDR format. Enter in x.x.x.x/len format", show_help=True)
    if not _parse_ip(neighbor):
        ctx.fail(EXIT_HELP, "Wrong IP format. Enter in x.x.x.x format", show_help=True)
    if not (routerip and asid and neighbor and neighbor_as):
        ctx.fail(EXIT_HELP, "Missing attributes", show_help=True)
    ctx.client().post_object("Bgps", hostname, {
        "as": asid, "hostname": hostname, "neighbor": neighbor, "neighbor-as": neighbor_as,
        "routerip": routerip,
    })


def delete_bgp(ctx: Context) -> None:
    _need_args(ctx, 1, "Host name required")
    hostname = ctx.args[0]
    ctx.out(f"Deleting Bgp router config: {hostname}\n")
    ctx.client().delete_object("Bgps", hostname)


def list_bgp(ctx: Context) -> None:
    # Deviation: Contiv tested a misspelt "quite" flag, so -q printed the
    # table; here -q prints the host names like every other ls.
    _no_args(ctx)
    items = ctx.client().list("Bgps")

    def table(items: list[Any]) -> str:
        text = ("HostName\tRouterIP\tAS\tNeighbor\tNeighborAS\n"
                "---------\t--------\t-------\t--------\t-------\n")
        for b in items:
            text += _row(go_str(b, "hostname"), go_str(b, "routerip"), go_str(b, "as"),
                         go_str(b, "neighbor"), go_str(b, "neighbor-as"))
        return text
    _print_list(ctx, items, "hostname", table)


def inspect_bgp(ctx: Context) -> None:
    _need_args(ctx, 1, "Host name required")
    _inspect(ctx, "Bgps", ctx.args[0])


# -- app-profile ------------------------------------------------------------------

def _post_app_profile(ctx: Context) -> tuple[str, str]:
    _need_args(ctx, 1, "Profile name required")
    tenant, profile = ctx.flags.string("tenant"), ctx.args[0]
    group_flag = ctx.flags.string("group")
    groups = group_flag.split(",") if group_flag else []
    ctx.client().post_object("appProfiles", f"{tenant}:{profile}", {
        "tenantName": tenant, "appProfileName": profile, "endpointGroups": groups,
    })
    return tenant, profile


def create_app_profile(ctx: Context) -> None:
    tenant, profile = _post_app_profile(ctx)
    ctx.out(f"Creating AppProfile {tenant}:{profile}\n")


def update_app_profile(ctx: Context) -> None:
    _post_app_profile(ctx)


def delete_app_profile(ctx: Context) -> None:
    _need_args(ctx, 1, "Profile name required")
    ctx.client().delete_object("appProfiles", f"{ctx.flags.string('tenant')}:{ctx.args[0]}")


def list_app_profiles(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "appProfiles")

    def table(items: list[Any]) -> str:
        return ("Tenant\tAppProfile\tGroups\n------\t----------\t------\n"
                + "".join(_row(go_str(p, "tenantName"), go_str(p, "appProfileName"),
                               ",".join(go_list(p, "endpointGroups"))) for p in items))
    _print_list(ctx, items, "appProfileName", table)


def list_app_profile_groups(ctx: Context) -> None:
    _need_args(ctx, 1, "Profile name required")
    tenant = ctx.flags.string("tenant")
    profile = ctx.client().get_object("appProfiles", f"{tenant}:{ctx.args[0]}")
    if ctx.flags.bool("json"):
        _dump_json(ctx, profile)
    else:
        # Deviation: Contiv printed the list without a final newline.
        ctx.out(",".join(go_list(profile, "endpointGroups")) + "\n")


# -- service (serviceLB) ----------------------------------------------------------

def _service_tenant(ctx: Context) -> str:
    return ctx.flags.string("tenant") or "default"


def create_service(ctx: Context) -> None:
    _need_args(ctx, 1, "Service name required")
    f = ctx.flags
    name, tenant = ctx.args[0], _service_tenant(ctx)
    ctx.client().post_object("serviceLBs", f"{tenant}:{name}", {
        "serviceName": name, "tenantName": tenant, "networkName": f.string("network"),
        "ipAddress": f.string("preferred-ip"), "selectors": f.string_slice("selector"),
        "ports": f.string_slice("port"),
    })
    ctx.out(f"Creating ServiceLB {tenant}:{name}\n")


def delete_service(ctx: Context) -> None:
    _need_args(ctx, 1, "Service name required")
    name, tenant = ctx.args[0], _service_tenant(ctx)
    ctx.out(f"Deleting Service  {name},{tenant}\n")
    ctx.client().delete_object("serviceLBs", f"{tenant}:{name}")


def list_services(ctx: Context) -> None:
    items = _tenant_items(ctx, "serviceLBs", _service_tenant(ctx))

    def table(items: list[Any]) -> str:
        text = "ServiceName\tTenant\tNetwork\tSelectors\n---------\t--------\t-------\t-------\n"
        for s in items:
            text += _row(go_str(s, "serviceName"), go_str(s, "tenantName"),
                         go_str(s, "networkName"), go_list(s, "selectors"), "")
        return text
    _print_list(ctx, items, "serviceName", table)


def inspect_service(ctx: Context) -> None:
    _need_args(ctx, 1, "Service group name required")
    _inspect(ctx, "serviceLBs", f"{_service_tenant(ctx)}:{ctx.args[0]}")


# -- external contracts -----------------------------------------------------------

def list_external_contracts(ctx: Context) -> None:
    _no_args(ctx)
    items = _tenant_items(ctx, "extContractsGroups")

    def table(items: list[Any]) -> str:
        text = "Tenant\tName\t\tType\t\tContracts\n------\t------\t\t------\t\t-------\n"
        for c in items:
            text += (f"{go_str(c, 'tenantName')}\t{go_str(c, 'contractsGroupName')}\t\t"
                     f"{go_str(c, 'contractsType')}\t{go_v(go_list(c, 'contracts'))}\n")
        return text
    _print_list(ctx, items, "contractsGroupName", table)


def delete_external_contracts(ctx: Context) -> None:
    _need_args(ctx, 1, "Contracts group name required")
    name, tenant = ctx.args[0], ctx.flags.string("tenant")
    ctx.out(f"Deleting external contracts group {name} in tenant {tenant}\n")
    ctx.client().delete_object("extContractsGroups", f"{tenant}:{name}")


def create_external_contracts(ctx: Context) -> None:
    _need_args(ctx, 1, "Contracts group name required")
    f = ctx.flags
    if f.bool("provided") and f.bool("consumed"):
        ctx.fail(EXIT_HELP, "Cannot use both provided and consumed")
    elif f.bool("provided"):
        kind = "provided"
    elif f.bool("consumed"):
        kind = "consumed"
    else:
        ctx.fail(EXIT_HELP, "Either provided or consumed must be specified")
    contracts = f.string_slice("contract")
    if not contracts:
        ctx.fail(EXIT_HELP, "Contracts not provided")
    tenant, name = f.string("tenant"), ctx.args[0]
    ctx.client().post_object("extContractsGroups", f"{tenant}:{name}", {
        "tenantName": tenant, "contractsGroupName": name, "contractsType": kind,
        "contracts": contracts,
    })
    ctx.out(f"Creating ExternalContracts {tenant}:{name}\n")
