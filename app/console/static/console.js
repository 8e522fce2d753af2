// The console's page logic: the repo list, one repo's DAG, the node panel (note, log,
// instances, neuroglancer links, write actions), and the diff of two picked nodes.
// Write controls appear only when /api/server/whoami says the caller may write.

import { get, post, setToken, token } from "./api.js";
import { draw } from "./dag.js";
import { layerType, viewerLink, viewerState } from "./neuroglancer.js";

const LEVELS = { none: 0, read: 1, write: 2, admin: 3 };
const state = { config: {}, me: null, repo: null, selected: null, diffFrom: null, diffTo: null };
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
}

function level(root) {
  const me = state.me;
  if (!me || me.admin) return LEVELS.admin;
  return Math.max(LEVELS[me.repos[root] || "none"], LEVELS[me.everywhere]);
}

const canWrite = (root) => level(root) >= LEVELS.write;

async function loadRepos() {
  const repos = Object.values(await get("/api/repos/info"));
  repos.sort((a, b) => String(a.Alias).localeCompare(String(b.Alias)));
  const body = $("repo-table").querySelector("tbody");
  body.replaceChildren(
    ...repos.map((repo) => {
      const row = el(
        "tr",
        { className: "repo-row" },
        el("td", { className: "alias" }, repo.Alias || ""),
        el("td", { className: "description" }, repo.Description || ""),
        el("td", { className: "created" }, repo.Created || ""),
        el("td", { className: "updated" }, repo.Updated || ""),
        el("td", {}, el("code", {}, repo.Root)),
      );
      row.dataset.root = repo.Root;
      row.addEventListener("click", () => { location.hash = `repo=${repo.Root}`; });
      return row;
    }),
  );
}

async function openRepo(root) {
  const repo = await get(`/api/repo/${root}/info`);
  state.repo = repo;
  state.diffFrom = state.diffTo = null;
  $("repo").hidden = false;
  $("repo-title").textContent = `${repo.Alias || repo.Root}: ${Object.keys(repo.DAG.Nodes).length} versions`;
  // How long drawing takes, up to the next painted frame (the 1,000-node test reads it).
  const t0 = performance.now();
  draw($("dag"), repo.DAG);
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  window.consoleDrawMs = performance.now() - t0;
  window.consoleDrawnAt = performance.now();
  $("node-panel").hidden = true;
  $("diff-panel").hidden = true;
  if (state.selected && state.selected in repo.DAG.Nodes) await showNode(state.selected);
}

function extentsText(info) {
  const ext = info && (info.Extents || info.Extended);
  if (!ext || !ext.MinPoint) return "";
  return `${ext.MinPoint.join(",")}..${ext.MaxPoint.join(",")}`;
}

async function instanceRow(uuid, name, typename) {
  let info = null;
  try {
    info = await get(`/api/node/${uuid}/${name}/info`);
  } catch {
    info = null;
  }
  const cells = [el("td", { className: "name" }, name), el("td", { className: "type" }, typename),
    el("td", { className: "extents" }, extentsText(info))];
  const link = el("td");
  if (state.config.neuroglancer && info && layerType(typename)) {
    const s = viewerState(location.origin, uuid, name, typename, info);
    link.append(el("a", { className: "neuroglancer", href: viewerLink(state.config.neuroglancer, s),
      target: "_blank", textContent: "neuroglancer" }));
  }
  const row = el("tr", { className: "instance" }, ...cells, link);
  row.dataset.name = name;
  return row;
}

function actionForm(label, field, run) {
  const input = el("input", { name: field, placeholder: field });
  const form = el("form", { className: `action-${label.toLowerCase()}` }, input,
    el("button", { type: "submit", textContent: label }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await run(input.value);
      showError(null);
      await openRepo(state.repo.Root);
    } catch (error) {
      showError(error);
    }
  });
  return form;
}

function writeActions(uuid, node) {
  if (!canWrite(state.repo.Root)) return [];
  const forms = [];
  if (!node.Locked) {
    forms.push(actionForm("Commit", "note", (note) => post(`/api/node/${uuid}/commit`, { note })));
    forms.push(actionForm("Note", "note", (note) => post(`/api/node/${uuid}/note`, { note })));
  } else {
    forms.push(actionForm("Branch", "branch", async (branch) => {
      state.selected = (await post(`/api/node/${uuid}/branch`, { branch })).child;
    }));
    forms.push(actionForm("Tag", "tag", (tag) => post(`/api/node/${uuid}/tag`, { tag })));
    forms.push(actionForm("Child", "note", async (note) => {
      state.selected = (await post(`/api/node/${uuid}/newversion`, { note })).child;
    }));
  }
  return [el("div", { className: "actions" }, el("h4", {}, "Change"), ...forms)];
}

function diffButtons(uuid) {
  const pick = (which) => el("button", {
    className: `diff-${which}`,
    textContent: `Diff ${which}`,
    onclick: () => {
      state[which === "from" ? "diffFrom" : "diffTo"] = uuid;
      showDiff().catch(showError);
    },
  });
  return el("p", {}, pick("from"), " ", pick("to"));
}

async function showNode(uuid) {
  const node = state.repo.DAG.Nodes[uuid];
  state.selected = uuid;
  for (const c of $("dag").querySelectorAll(".node.selected")) c.classList.remove("selected");
  const circle = $("dag").querySelector(`.node[data-uuid="${uuid}"]`);
  if (circle) circle.classList.add("selected");
  const names = Object.entries(state.repo.DataInstances || {});
  const rows = await Promise.all(names.map(([name, inst]) => instanceRow(uuid, name, inst.Base.TypeName)));
  const panel = $("node-panel");
  panel.dataset.uuid = uuid;
  panel.replaceChildren(
    el("h3", {}, el("code", {}, uuid)),
    el("p", { className: "state" }, `${node.Branch || "master"}, ${node.Locked ? "locked" : "open"}`),
    el("h4", {}, "Note"), el("pre", { className: "note" }, node.Note || ""),
    el("h4", {}, "Log"), el("pre", { className: "log" }, (node.Log || []).join("\n")),
    el("h4", {}, "Instances"),
    el("table", { className: "instances" },
      el("thead", {}, el("tr", {}, ...["Name", "Type", "Extents", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    diffButtons(uuid),
    ...writeActions(uuid, node),
  );
  panel.hidden = false;
}

const count = (v) => (Array.isArray(v) ? v.length : v && typeof v === "object" ? Object.keys(v).length : 0);

async function showDiff() {
  const panel = $("diff-panel");
  panel.hidden = false;
  const { diffFrom, diffTo } = state;
  if (!diffFrom || !diffTo) {
    panel.replaceChildren(el("p", {}, `Diff from ${diffFrom || "?"} to ${diffTo || "?"}: pick both.`));
    return;
  }
  const url = `/api/repo/${state.repo.Root}/diff/${diffFrom}/${diffTo}`;
  const diff = await get(url);
  const heads = ["Instance", "Type", "Keys +", "Keys ~", "Keys −", "Blocks", "Labels", "Mutations"];
  const rows = Object.entries(diff.instances).map(([name, d]) => {
    const keys = d.keys || {};
    const row = el("tr", { className: "changed" }, el("td", { className: "name" }, name),
      el("td", {}, d.typename),
      ...[keys.added, keys.changed, keys.deleted, d.blocks, d.labels, d.mutations].map((v) =>
        el("td", {}, String(count(v)))));
    row.dataset.name = name;
    return row;
  });
  panel.replaceChildren(
    el("h3", {}, "Diff"),
    el("p", {}, el("code", {}, diffFrom.slice(0, 8)), " → ", el("code", {}, diffTo.slice(0, 8)),
      rows.length ? "" : ": no changes"),
    el("table", { className: "diff" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    el("p", {}, el("a", { className: "diff-list", href: url, target: "_blank", textContent: "the full list (JSON)" })),
  );
}

async function route() {
  const match = location.hash.match(/repo=([0-9a-fA-F]+)/);
  if (match) await openRepo(match[1]);
  else $("repo").hidden = true;
}

async function start() {
  $("token").value = token();
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    location.reload();
  });
  $("dag").addEventListener("click", (event) => {
    const uuid = event.target.closest(".node")?.dataset.uuid;
    if (uuid) showNode(uuid).catch(showError);
  });
  window.addEventListener("hashchange", () => route().catch(showError));
  state.config = await get("/console/config.json");
  state.me = await get("/api/server/whoami");
  $("who").textContent = state.me.auth ? `user: ${state.me.user || "anonymous"}` : "";
  $("login").hidden = !state.me.auth;
  if (state.me.auth && !state.me.user) {
    showError("This server needs a bearer token: enter yours above.");
  } else {
    await loadRepos();
    await route();
  }
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  showError(error);
  document.body.dataset.ready = "error";
});
