// Lays out and draws a repo's version DAG as one SVG string (a single innerHTML write,
// so 1,000 nodes draw in a few milliseconds). Rows are generations (longest path from
// the root, so a merge sits below both parents); columns are branches, in the order
// they first appear; a tag or second child on one branch and row gets the next column.

const ROW = 40;
const COL = 110;
const PAD = 24;
const R = 9;

// DVID's node JSON names parents and children by version ID: map them to UUIDs.
export function links(dag) {
  const byVersion = new Map();
  for (const [uuid, node] of Object.entries(dag.Nodes)) byVersion.set(node.VersionID, uuid);
  const known = (ids) => ids.map((id) => byVersion.get(id)).filter((uuid) => uuid !== undefined);
  const parents = new Map();
  const children = new Map();
  for (const [uuid, node] of Object.entries(dag.Nodes)) {
    parents.set(uuid, known(node.Parents));
    children.set(uuid, known(node.Children));
  }
  return { parents, children };
}

export function layout(dag, { parents, children }) {
  const nodes = dag.Nodes;
  const depth = new Map();
  const pending = new Map();
  for (const uuid of Object.keys(nodes)) pending.set(uuid, parents.get(uuid).length);
  const order = Object.keys(nodes).filter((u) => pending.get(u) === 0);
  for (const u of order) depth.set(u, 0);
  for (let i = 0; i < order.length; i += 1) {
    const uuid = order[i];
    for (const child of children.get(uuid)) {
      depth.set(child, Math.max(depth.get(child) || 0, depth.get(uuid) + 1));
      pending.set(child, pending.get(child) - 1);
      if (pending.get(child) === 0) order.push(child);
    }
  }
  const columns = new Map();
  const taken = new Set();
  const place = new Map();
  for (const uuid of order) {
    const branch = nodes[uuid].Branch || "";
    if (!columns.has(branch)) columns.set(branch, columns.size);
    let col = columns.get(branch);
    const row = depth.get(uuid);
    while (taken.has(`${row},${col}`)) col += 1;
    taken.add(`${row},${col}`);
    place.set(uuid, { x: PAD + col * COL, y: PAD + row * ROW, row, col });
  }
  return { order, place };
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function draw(svg, dag) {
  const graph = links(dag);
  const { order, place } = layout(dag, graph);
  const nodes = dag.Nodes;
  const edges = [];
  const circles = [];
  const labels = [];
  let width = 0;
  let height = 0;
  for (const uuid of order) {
    const node = nodes[uuid];
    const p = place.get(uuid);
    width = Math.max(width, p.x);
    height = Math.max(height, p.y);
    const up = graph.parents.get(uuid);
    for (const parent of up) {
      const q = place.get(parent);
      edges.push(
        `<line class="edge" data-from="${parent}" data-to="${uuid}" ` +
          `x1="${q.x}" y1="${q.y}" x2="${p.x}" y2="${p.y}"/>`,
      );
    }
    const state = node.Locked ? "locked" : "open";
    const title = `${uuid} (${node.Branch || "master"}, ${state})`;
    circles.push(
      `<circle class="node ${state}" data-uuid="${uuid}" cx="${p.x}" cy="${p.y}" r="${R}">` +
        `<title>${escape(title)}</title></circle>`,
    );
    const first = !up.some((q) => nodes[q].Branch === node.Branch);
    const name = first ? `${node.Branch || "master"} ` : "";
    labels.push(
      `<text class="branch" x="${p.x + R + 3}" y="${p.y + 4}">${escape(name)}${uuid.slice(0, 6)}</text>`,
    );
  }
  svg.setAttribute("width", width + COL);
  svg.setAttribute("height", height + PAD + R);
  svg.innerHTML = edges.join("") + circles.join("") + labels.join("");
}
