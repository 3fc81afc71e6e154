"""A story graph as a file: a self-contained HTML page with an SVG laid out here in layers
(no script, nothing fetched from the network), or Graphviz DOT."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from server.training.story_graph import StoryGraph

CHAR_WIDTH = 7.2  # px per character of the 12px sans-serif labels, roughly
NODE_HEIGHT = 30.0
LAYER_GAP = 60.0
NODE_GAP = 24.0
MARGIN = 20.0
SWEEPS = 8
MAX_BENDS = 20_000
BACK_BEND = 40.0  # px an edge going up bends aside


@dataclass
class Layout:
    """Where each node's centre is (real nodes and the bends of long edges), and the points
    each edge passes through, from its source to its target."""

    x: dict[int, float]
    y: dict[int, float]
    width: dict[int, float]
    paths: list[list[tuple[float, float]]]
    size: tuple[float, float]


def _acyclic(n: int, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The edges with those closing a cycle turned around (depth-first from node 0, then the
    nodes not reached), so every edge points down the layers."""
    out: dict[int, list[int]] = {v: [] for v in range(n)}
    for a, b in edges:
        out[a].append(b)
    state = [0] * n  # 0 unseen, 1 on the stack, 2 done
    back: set[tuple[int, int]] = set()
    for root in range(n):
        if state[root]:
            continue
        stack = [(root, iter(out[root]))]
        state[root] = 1
        while stack:
            v, children = stack[-1]
            for w in children:
                if state[w] == 1:
                    back.add((v, w))
                elif state[w] == 0:
                    state[w] = 1
                    stack.append((w, iter(out[w])))
                    break
            else:
                state[v] = 2
                stack.pop()
    return [(b, a) if (a, b) in back else (a, b) for a, b in edges]


def _layers(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Longest path from the sources: each node one layer below its lowest predecessor."""
    incoming = [0] * n
    out: dict[int, list[int]] = {v: [] for v in range(n)}
    for a, b in edges:
        if a != b:
            out[a].append(b)
            incoming[b] += 1
    layer = [0] * n
    ready = [v for v in range(n) if incoming[v] == 0]
    while ready:
        v = ready.pop()
        for w in out[v]:
            layer[w] = max(layer[w], layer[v] + 1)
            incoming[w] -= 1
            if incoming[w] == 0:
                ready.append(w)
    return layer


def layout(graph: StoryGraph) -> Layout:
    """A layered (Sugiyama-style) drawing, top to bottom: cycles broken, nodes put in layers,
    long edges split by bend points, layers ordered by barycentres to cut crossings, and
    each node placed under the mean of its parents without overlapping its neighbours."""
    n = len(graph.nodes)
    directed = _acyclic(n, graph.edges)
    layer = _layers(n, directed)
    width = {node.id: len(node.label) * CHAR_WIDTH + 24 for node in graph.nodes}

    # Long edges become chains through bend points (ids from n up), one per layer crossed;
    # the shortest first, and within a budget, past which an edge is drawn straight (a big,
    # deep graph would otherwise need a bend per edge and layer: millions).
    spans = sorted(
        range(len(directed)), key=lambda i: layer[directed[i][1]] - layer[directed[i][0]]
    )
    bent: set[int] = set()
    budget = MAX_BENDS
    for i in spans:
        crossed = max(layer[directed[i][1]] - layer[directed[i][0]] - 1, 0)
        if crossed > budget:
            break
        budget -= crossed
        bent.add(i)
    chains: list[list[int]] = []
    next_id = n
    for i, ((a, b), (src, dst)) in enumerate(zip(directed, graph.edges, strict=True)):
        chain = [a]
        for level in range(layer[a] + 1, layer[b]) if i in bent else ():
            layer.append(level)
            width[next_id] = 0.0
            chain.append(next_id)
            next_id += 1
        chain.append(b)
        chains.append(chain if (a, b) == (src, dst) else chain[::-1])
    total = next_id
    up: dict[int, list[int]] = {v: [] for v in range(total)}
    down: dict[int, list[int]] = {v: [] for v in range(total)}
    for chain in chains:
        ordered = chain if layer[chain[0]] <= layer[chain[-1]] else chain[::-1]
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a != b:
                down[a].append(b)
                up[b].append(a)

    depth = max(layer, default=0) + 1
    rows: list[list[int]] = [[] for _ in range(depth)]
    for v in range(total):
        rows[layer[v]].append(v)
    position = {v: i for row in rows for i, v in enumerate(row)}
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        order = range(1, depth) if downward else range(depth - 2, -1, -1)
        for level in order:
            row = rows[level]
            neighbours = up if downward else down

            def barycentre(v: int, near: dict[int, list[int]] = neighbours) -> float:
                if not near[v]:
                    return float(position[v])
                return sum(position[u] for u in near[v]) / len(near[v])

            row.sort(key=barycentre)
            for i, v in enumerate(row):
                position[v] = i

    x: dict[int, float] = {}
    for level, row in enumerate(rows):
        wanted = [sum(x[u] for u in up[v]) / len(up[v]) if level and up[v] else 0.0 for v in row]
        placed: list[float] = []
        for i, v in enumerate(row):
            left = placed[-1] + (width[row[i - 1]] + width[v]) / 2 + NODE_GAP if placed else None
            placed.append(wanted[i] if left is None else max(wanted[i], left))
        # Shift the row so it sits, on the whole, where its nodes want to be.
        shift = (sum(wanted) - sum(placed)) / len(row) if row else 0.0
        for v, at in zip(row, placed, strict=True):
            x[v] = at + shift
    left_edge = min((x[v] - width[v] / 2 for v in x), default=0.0)
    right_edge = max((x[v] + width[v] / 2 for v in x), default=0.0)
    for v in x:
        x[v] += MARGIN - left_edge
    y = {v: MARGIN + NODE_HEIGHT / 2 + layer[v] * (NODE_HEIGHT + LAYER_GAP) for v in range(total)}
    paths = [[(x[v], y[v]) for v in chain] for chain in chains]
    size = (
        right_edge - left_edge + 2 * MARGIN,
        2 * MARGIN + depth * NODE_HEIGHT + (depth - 1) * LAYER_GAP,
    )
    return Layout(x, y, width, paths, size)


_STYLE = """
body { margin: 0; font: 12px sans-serif; background: #fff; }
h1 { font-size: 14px; margin: 12px 20px 0; }
.edge { fill: none; stroke: #555; stroke-width: 1.2; }
.node rect { stroke: #333; stroke-width: 1; }
.node text { font: 12px sans-serif; text-anchor: middle; dominant-baseline: central; }
.start rect, .end rect { fill: #eee; }
.intent rect { fill: #bfe0f5; }
.action rect { fill: #fff; }
"""


def _ends(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The path from the bottom of its source box to the top of its target box (or the other
    way round for an edge going up)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    half = NODE_HEIGHT / 2
    first = (x0, y0 + half if y1 >= y0 else y0 - half)
    last = (x1, y1 - half if y1 >= y0 else y1 + half)
    return [first, *points[1:-1], last]


def _path(points: list[tuple[float, float]]) -> str:
    """SVG path data through the points. An edge going up (back to an earlier step) bends to
    the right, so it does not lie on the edge going down between the same two nodes."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    if y1 < y0 and len(points) == 2:
        cx, cy = (x0 + x1) / 2 + BACK_BEND, (y0 + y1) / 2
        return f"M{x0:.1f},{y0:.1f} Q{cx:.1f},{cy:.1f} {x1:.1f},{y1:.1f}"
    if y1 < y0:
        points = [points[0], *((px + BACK_BEND, py) for px, py in points[1:-1]), points[-1]]
    return "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in points)


def graph_html(graph: StoryGraph, title: str = "Story graph") -> str:
    """The page: one inline SVG, its style inline too; it needs no network and no script."""
    drawn = layout(graph)
    width, height = drawn.size
    parts = [
        f'<svg width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{html.escape(title)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for (src, dst), points in zip(graph.edges, drawn.paths, strict=True):
        if src == dst:  # a step that repeats itself: a loop on the node's right side
            cx, cy = drawn.x[src] + drawn.width[src] / 2, drawn.y[src]
            d = f"M{cx:.1f},{cy - 6:.1f} c30,-24 30,36 0,12"
        else:
            d = _path(_ends(points))
        parts.append(
            f'<path class="edge" data-from="{src}" data-to="{dst}" d="{d}" '
            'marker-end="url(#arrow)"/>'
        )
    for node in graph.nodes:
        cx, cy, w = drawn.x[node.id], drawn.y[node.id], drawn.width[node.id]
        radius = NODE_HEIGHT / 2 if node.kind != "action" else 4
        parts.append(
            f'<g class="node {node.kind}" id="node-{node.id}">'
            f"<title>{html.escape(node.title)}</title>"
            f'<rect x="{cx - w / 2:.1f}" y="{cy - NODE_HEIGHT / 2:.1f}" width="{w:.1f}" '
            f'height="{NODE_HEIGHT:.0f}" rx="{radius:.0f}"/>'
            f'<text x="{cx:.1f}" y="{cy:.1f}">{html.escape(node.label)}</text></g>'
        )
    parts.append("</svg>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def graph_dot(graph: StoryGraph) -> str:
    """Graphviz DOT of the same graph (`dot -Tsvg graph.dot`)."""
    shapes = {
        "start": 'shape=ellipse, style=filled, fillcolor="#eeeeee"',
        "end": 'shape=ellipse, style=filled, fillcolor="#eeeeee"',
        "intent": 'shape=box, style="rounded,filled", fillcolor="#bfe0f5"',
        "action": "shape=box",
    }
    lines = ["digraph story_graph {", '  node [fontname="sans-serif", fontsize=12];']
    for node in graph.nodes:
        # JSON string quoting is DOT's: a backslash and a double quote escaped.
        lines.append(
            f"  {node.id} [label={json.dumps(node.title, ensure_ascii=False)}, "
            f"class={node.kind}, {shapes[node.kind]}];"
        )
    for src, dst in graph.edges:
        lines.append(f"  {src} -> {dst};")
    lines.append("}")
    return "\n".join(lines) + "\n"
