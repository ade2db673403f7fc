// The fabric view: reads /web/events (server-sent events: one "state" document per change)
// with fetch, so that the X-Auth-Token header can be sent when the netmaster requires a
// login (EventSource cannot send headers). Everything is built with textContent: names
// and container names are shown, never interpreted as markup.
"use strict";

const EVENTS = "/web/events";
const LOGIN = "/api/v1/auth_proxy/login/";
const TOKEN_KEY = "contiv-sdn-token";

const statusEl = document.getElementById("status");
const loginForm = document.getElementById("login");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return node;
}

let idSeq = 0;
function headingId(prefix) { idSeq += 1; return `${prefix}-${idSeq}`; }

function table(caption, columns, rows, attrs) {
  const head = el("tr", {}, ...columns.map(c => el("th", { scope: "col" }, c)));
  return el("table", attrs || {}, el("caption", {}, caption), el("thead", {}, head),
            el("tbody", {}, ...rows));
}

function endpointTable(caption, endpoints) {
  if (!endpoints.length) return el("p", { class: "empty" }, "No endpoints.");
  const rows = endpoints.map(e => el("tr", { "data-endpoint": e.id, "data-container": e.container },
    el("td", {}, e.container || "(unnamed)"), el("td", {}, e.host), el("td", {}, e.ip),
    el("td", {}, e.mac), el("td", {}, e.containerID)));
  return table(caption, ["Container", "Host", "Address", "MAC", "Container id"], rows,
               { class: "endpoints" });
}

function ruleText(value) { return value === undefined || value === null || value === "" ? "any" : String(value); }

function renderTenant(t) {
  const hid = headingId("tenant");
  const section = el("section", { class: "tenant", "data-tenant": t.name, "aria-labelledby": hid },
                     el("h3", { id: hid }, `Tenant ${t.name}`));
  if (!t.networks.length) section.append(el("p", { class: "empty" }, "No networks."));
  for (const n of t.networks) {
    const nid = headingId("net");
    const net = el("section", { class: "network", "data-network": n.name, "aria-labelledby": nid },
      el("h4", { id: nid }, `Network ${n.name}`),
      el("p", { class: "meta" },
         `${n.encap || "?"}${n.pktTag ? " tag " + n.pktTag : ""}, subnet ${n.subnet || "?"}` +
         (n.gateway ? `, gateway ${n.gateway}` : "")));
    for (const g of n.groups) {
      const gid = headingId("group");
      const grp = el("section", { class: "group", "data-group": g.name, "aria-labelledby": gid },
        el("h5", { id: gid }, `Group ${g.name}`),
        el("p", { class: "meta" }, g.policies.length ? `Policies: ${g.policies.join(", ")}` : "No policy."));
      grp.append(endpointTable(`Endpoints of group ${g.name}`, g.endpoints));
      net.append(grp);
    }
    if (n.endpoints.length || !n.groups.length) {
      net.append(endpointTable(`Endpoints of network ${n.name} outside any group`, n.endpoints));
    }
    section.append(net);
  }
  for (const p of t.policies) {
    const pid = headingId("policy");
    const rows = p.rules.map(r => el("tr", { "data-rule": r.ruleId },
      el("td", {}, r.ruleId), el("td", { class: "num" }, r.priority || 1), el("td", {}, r.direction || ""),
      el("td", {}, r.protocol || "any"), el("td", { class: "num" }, r.port ? String(r.port) : "any"),
      el("td", {}, ruleText(r.fromEndpointGroup || r.fromNetwork || r.fromIpAddress)),
      el("td", {}, ruleText(r.toEndpointGroup || r.toNetwork || r.toIpAddress)),
      el("td", { class: r.action === "allow" ? "allow" : "deny" }, r.action || "")));
    const pol = el("section", { class: "policy", "data-policy": p.name, "aria-labelledby": pid },
      el("h4", { id: pid }, `Policy ${p.name}`),
      el("p", { class: "meta" }, p.groups.length ? `Applied to: ${p.groups.join(", ")}` : "Applied to no group."));
    pol.append(rows.length
      ? table(`Rules of policy ${p.name}`, ["Rule", "Priority", "Direction", "Protocol", "Port", "From", "To", "Action"],
              rows, { class: "rules" })
      : el("p", { class: "empty" }, "No rules."));
    section.append(pol);
  }
  return section;
}

function renderHosts(hosts) {
  const body = document.querySelector("#hosts tbody");
  body.replaceChildren(...hosts.map(h => el("tr", { "data-host": h.name || h.dpid },
    el("th", { scope: "row" }, h.name || "(unregistered switch)"), el("td", {}, h.vtepIP),
    el("td", {}, h.dpid),
    el("td", { class: h.live ? "" : "down-host" }, h.live ? "live" : "not refreshing"),
    el("td", { class: h.switch, "data-switch": h.switch }, h.switch),
    el("td", { class: "num", "data-flows": "" }, h.flows === null || h.flows === undefined ? "–" : String(h.flows)),
    el("td", { class: "num" }, String(h.endpoints)))));
  if (!hosts.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "empty" }, "No hosts registered.")));
}

function render(state) {
  idSeq = 0;
  renderHosts(state.hosts);
  const tenants = document.getElementById("tenants");
  tenants.replaceChildren(...state.tenants.map(renderTenant));
  setStatus(`Live — updated ${new Date().toLocaleTimeString()}` +
            (state.controller ? "" : " (this netmaster runs no OpenFlow controller)"), false);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function setStatus(text, down) {
  statusEl.textContent = text;
  statusEl.classList.toggle("down", Boolean(down));
}

function showLogin(message) {
  loginForm.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login-user").focus();
  setStatus("Login required", true);
}

loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = JSON.stringify({ username: loginForm.username.value, password: loginForm.password.value });
  try {
    const r = await fetch(LOGIN, { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const text = await r.text();
    if (!r.ok) { showLogin(text.trim() || `login refused (${r.status})`); return; }
    sessionStorage.setItem(TOKEN_KEY, JSON.parse(text).token);
    loginForm.hidden = true;
    loginForm.password.value = "";
    follow();
  } catch (e) {
    showLogin(`login failed: ${e}`);
  }
});

// Reads the event stream; on any end or error, tries again after a pause.
async function follow() {
  const headers = { Accept: "text/event-stream" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["X-Auth-Token"] = token;
  let retry = 2000;
  try {
    const r = await fetch(EVENTS, { headers, cache: "no-store" });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(token ? "Your session ended; log in again." : "");
      return;
    }
    if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
          else if (field === "retry" && /^\d+$/.test(val)) retry = Number(val);
        }
        if (event === "state" && data.length) render(JSON.parse(data.join("\n")));
      }
    }
    setStatus("Connection closed; reconnecting…", true);
  } catch (e) {
    setStatus(`Disconnected (${e.message || e}); retrying…`, true);
  }
  setTimeout(follow, retry);
}

follow();
