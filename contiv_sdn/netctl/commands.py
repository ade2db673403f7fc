"""netctl's command table: every command, alias, flag and default of Contiv's
``netctl/commands.go``, so existing scripts and muscle memory keep working."""

from __future__ import annotations

from contiv_sdn.netctl import actions as a
from contiv_sdn.netctl.context import Command
from contiv_sdn.netctl.goflag import bool_flag, int_flag, slice_flag, string_flag

TENANT = string_flag("tenant, t", "Name of the tenant", default="default")
ALL = bool_flag("all, a", "List all items")
JSON = bool_flag("json, j", "Output list in JSON format")
QUIET = bool_flag("quiet, q", "Only display name field")
LIST_FLAGS = (TENANT, ALL, JSON, QUIET)
SERVICE_TENANT = string_flag("tenant,t", "service tenant")


def _ls(usage: str, action, flags=LIST_FLAGS) -> Command:
    return Command("ls", usage, ("list",), " ", tuple(flags), action)


def _rm(usage: str, args_usage: str, action, flags=(TENANT,)) -> Command:
    return Command("rm", usage, ("delete",), args_usage, tuple(flags), action)


COMMANDS: tuple[Command, ...] = (
    Command("version", "Version Information", action=a.show_version),
    Command("login", "authenticate to Contiv (you must specify auth_proxy's HTTPS address "
            "in the --netmaster flag); the password may come from $NETCTL_PASSWORD",
            flags=(string_flag("username, u", "user name (default: prompt)"),),
            action=a.login),
    Command("logout", "revoke this login's token and remove ~/.netctl/config.json",
            action=a.logout),
    Command("user", "Users of a netmaster run with --auth (admin only)", subcommands=(
        Command("add", "Add a user (password from $NETCTL_PASSWORD or a prompt)",
                args_usage="[user]", flags=(
                    string_flag("role, r", "admin (everything), ops (read-only) or node "
                                           "(a host's netplugin: name the user after the "
                                           "host)", default="ops"),), action=a.add_user),
        Command("set", "Change a user's role or password (revokes its tokens)",
                args_usage="[user]", flags=(
                    string_flag("role, r", "admin, ops or node"),
                    bool_flag("password, p", "set a new password (prompt or "
                                             "$NETCTL_PASSWORD)"),), action=a.set_user),
        _rm("Delete a user (revokes its tokens)", "[user]", a.delete_user, ()),
        _ls("List users", a.list_users, (QUIET, JSON)),
    )),
    Command("group", "Endpoint Group manipulation tools", subcommands=(
        Command("create", "Create an endpoint group", args_usage="[network] [group]", flags=(
            TENANT,
            slice_flag("policy, p", "Policy"),
            string_flag("networkprofile, n", "network profile"),
            slice_flag("external-contract, e", "External contract"),
            string_flag("ip-pool, r", "IP Address range, example 10.36.0.1-10.36.0.10"),
            string_flag("epg-tag, tag", "Configured Group Tag"),
        ), action=a.create_group),
        Command("inspect", "Inspect a EndpointGroup", args_usage="[group]", flags=(TENANT,),
                action=a.inspect_group),
        _rm("Delete an endpoint group", "[group]", a.delete_group),
        _ls("List endpoint groups", a.list_groups),
    )),
    Command("endpoint", "Endpoint Inspection", aliases=("ep",), subcommands=(
        Command("inspect", "Inspect an Endpoint", args_usage="[epid]",
                action=a.inspect_endpoint),
    )),
    Command("netprofile", "Network profile manipulation tools", subcommands=(
        Command("create", "Create a network profile", args_usage="[netprofile]", flags=(
            TENANT,
            string_flag("bandwidth, b", "Bandwidth (e.g., 10 kbps, 100 mbps, 1gbps)"),
            int_flag("dscp, d", "DSCP"),
            int_flag("burst, s", "burst size(Must be in kilobytes)"),
        ), action=a.create_netprofile),
        _rm("Delete a network profile", "[network] [group]", a.delete_netprofile),
        _ls("List network profile", a.list_netprofiles),
        Command("inspect", "inspect network profile", args_usage="[netprofile]",
                flags=(TENANT,), action=a.inspect_netprofile),
    )),
    Command("network", "Network manipulation tools", aliases=("net",), subcommands=(
        _ls("List networks", a.list_networks),
        Command("inspect", "Inspect a Network", args_usage="[network]", flags=(TENANT,),
                action=a.inspect_network),
        _rm("Delete a network", "[network]", a.delete_network),
        Command("create", "Create a network", args_usage="[network]", flags=(
            TENANT,
            string_flag("nw-type, n", "Network Type (infra or data)", default="data"),
            string_flag("encap, e", "Encap type (vlan or vxlan)", default="vxlan"),
            int_flag("pkt-tag, p", "Packet tag (Vlan ID/VNI)"),
            string_flag("subnet, s", "Subnet CIDR - REQUIRED"),
            string_flag("gateway, g", "Gateway"),
            string_flag("subnetv6, s6", "IPv6 Subnet CIDR "),
            string_flag("gatewayv6, g6", "IPv6 Gateway"),
            string_flag("nw-tag, tag", "Configured Network Tag"),
        ), action=a.create_network),
    )),
    Command("tenant", "Tenant manipulation tools", subcommands=(
        _ls("List tenants", a.list_tenants, (QUIET, JSON)),
        _rm("Delete a tenant", "[tenant]", a.delete_tenant, ()),
        Command("create", "Create a tenant", args_usage="[tenant]", action=a.create_tenant),
        Command("inspect", "Inspect a tenant", args_usage="[tenant]", action=a.inspect_tenant),
    )),
    Command("policy", "Policy manipulation tools", subcommands=(
        Command("create", "Create a new policy", args_usage="[policy]", flags=(TENANT,),
                action=a.create_policy),
        _rm("Delete a policy", "[policy]", a.delete_policy),
        _ls("List policies", a.list_policies),
        Command("inspect", "Inspect a policy", args_usage="[policy]", flags=(TENANT,),
                action=a.inspect_policy),
        Command("rule-ls", "List rules for a given tenant,policy", args_usage="[policy]",
                flags=(TENANT, JSON, QUIET), action=a.list_rules),
        Command("rule-rm", "Delete a rule from the policy", args_usage="[policy] [rule id]",
                flags=(TENANT,), action=a.delete_rule),
        Command("rule-add", "Add a new rule to the policy", args_usage="[policy] [rule id]",
                flags=(
                    TENANT,
                    int_flag("priority, p", "Priority Indicator", default=1),
                    string_flag("direction, d", "Direction of traffic (in/out)", default="in"),
                    string_flag("from-group, g",
                                "From Endpoint Group Name (Valid in incoming direction only)"),
                    string_flag("to-group, e",
                                "To Endpoint Group Name (Valid in outgoing direction only)"),
                    string_flag("from-network, n",
                                "From Network name (Valid in incoming direction only)"),
                    string_flag("to-network, o",
                                "To Network name (Valid in outgoing direction only)"),
                    string_flag("from-ip-address, i",
                                "From IP address/CIDR (Valid in incoming direction only)"),
                    string_flag("to-ip-address, s",
                                "To IP address/CIDR (Valid in outgoing direction only)"),
                    string_flag("protocol, l", "Protocol (e.g., tcp, udp, icmp)"),
                    int_flag("port, P", "Port"),
                    string_flag("action, j", "Action to take (allow or deny)", default="allow"),
                ), action=a.add_rule),
    )),
    Command("external-contracts", "External contracts", subcommands=(
        Command("ls", "List external contracts", ("list",),
                flags=(QUIET, ALL, JSON, TENANT), action=a.list_external_contracts),
        Command("rm", "Delete external contracts", ("delete",), flags=(TENANT,),
                action=a.delete_external_contracts),
        Command("create", "Create external contracts", flags=(
            TENANT,
            bool_flag("consumed, c", "External contracts type - consumed"),
            bool_flag("provided, p", "External contracts type - provided"),
            slice_flag("contract, a", "Contract"),
        ), action=a.create_external_contracts),
    )),
    Command("global", "Global information", subcommands=(
        Command("info", "Show global information", args_usage=" ", flags=(TENANT, ALL, JSON),
                action=a.show_global),
        Command("inspect", "Inspect Global Operational Information", args_usage=" ",
                action=a.inspect_global),
        Command("set", "Set global parameters", args_usage=" ", flags=(
            string_flag("fabric-mode, f", "Fabric mode (aci, aci-opflex or default)"),
            string_flag("vlan-range, v", "Allowed Vlan id range"),
            string_flag("vxlan-range, x", "Allowed Vxlan VNID range"),
            string_flag("fwd-mode, b", "forwarding mode (bridge,routing)"),
            string_flag("arp-mode, a", "arp mode (proxy,flood)"),
            string_flag("private-subnet, s", "Select a /16 private subnet for host access",
                        default="172.19.0.0/16"),
        ), action=a.set_global),
    )),
    Command("aci-gw", "ACI Gateway information", subcommands=(
        Command("info", "Show aci gateway information", args_usage=" ",
                flags=(TENANT, ALL, JSON), action=a.show_aci_gw),
        Command("inspect", "Inspect aci gateway operational information", args_usage=" ",
                action=a.inspect_aci_gw),
        Command("set", "Set aci-gw parameters", args_usage=" ", flags=(
            string_flag("path-bindings, p", "Blank or  Comma separated paths of the form "
                        "topology/pod-1/paths-101/pathep-[eth1/14]"),
            string_flag("node-bindings, n", "Blank or  Comma separated nodes of the form "
                        "topology/pod-1/node-101"),
            string_flag("phys-dom, d", "ACI physical domain name (e.g. containerDom)"),
            string_flag("enforce-policies, e", "Should security policies be enforced (yes,no)",
                        default="yes"),
            string_flag("include-common-tenant, i",
                        "Should gateway look up objects in common tenant as well(yes,no)",
                        default="no"),
        ), action=a.set_aci_gw),
    )),
    Command("bgp", "router capability configuration", subcommands=(
        Command("ls", "List BGP configuration", ("list",), "[hostname]", (JSON, QUIET),
                a.list_bgp),
        Command("rm", "Delete BGP configuration", ("delete",), "[hostname]", (),
                a.delete_bgp),
        Command("create", "Add BGP configuration.", args_usage="[hostname]", flags=(
            string_flag("router-ip", "BGP my-router ip "),
            string_flag("as", "Self AS id"),
            string_flag("neighbor-as", "BGP neighbor AS id"),
            string_flag("neighbor", "BGP neighbor to be added"),
        ), action=a.add_bgp),
        Command("inspect", "Inspect Bgp", args_usage="[hostname]", action=a.inspect_bgp),
    )),
    Command("app-profile", "Application Profile manipulation tools", subcommands=(
        Command("create", "Create an application profile", args_usage="[app-profile]", flags=(
            TENANT, string_flag("group, g", "Endpoint Group List (separated by commas)"),
        ), action=a.create_app_profile),
        Command("update", "Update an application profile", args_usage="[app-profile]", flags=(
            TENANT, string_flag("group, g", "Endpoint Group List (separated by commas)"),
        ), action=a.update_app_profile),
        _rm("Delete an application profile", "[app-profile]", a.delete_app_profile),
        _ls("List Application Profiles", a.list_app_profiles),
        Command("group-ls", "List groups in an app-profile", ("group-list",),
                "[network] [app-profile]", LIST_FLAGS, a.list_app_profile_groups),
    )),
    Command("service", "service object creation (only for  docker version <= 1.12.x)",
            subcommands=(
                _ls("List service objects", a.list_services),
                Command("inspect", "Inspect a Network", args_usage="[servicename]",
                        flags=(TENANT,), action=a.inspect_service),
                _rm("Delete service object", "[servicename]", a.delete_service,
                    (SERVICE_TENANT,)),
                Command("create", "Create Service object (only for docker version <= 1.12.x)",
                        args_usage="[servicename]", flags=(
                            SERVICE_TENANT,
                            string_flag("network,s", "service network name"),
                            slice_flag("selector,l", "service selector .Usage: "
                                       "--selector=key1=value1 --selector=key2=value2"),
                            slice_flag("port,p", "service/provider Port Usage- "
                                       "--port=svcPort1:provPort1:protocol "
                                       "--port=svcPort2:provPort2:protocol"),
                            string_flag("preferred-ip,ip", "preferred ip address"),
                        ), action=a.create_service),
            )),
)
