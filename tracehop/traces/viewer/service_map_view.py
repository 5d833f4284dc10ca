"""The service map drawn as SVG on the server: services in columns by call depth, edges with counts.

A service goes one column right of the furthest service that calls it (callers on the left, like
reading a request), so gateway and beat start, the worker follows, users comes last. Edges that skip
a column bow downwards so they do not run through the nodes between.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracehop.traces.store.service_map import ServiceEdge, ServiceMap
from tracehop.traces.viewer.trace_page import service_colours

NODE_WIDTH, NODE_HEIGHT = 150, 54
COLUMN_GAP, ROW_GAP = 130, 50
MARGIN = 30


@dataclass(frozen=True)
class NodeBox:
    service: str
    x: int
    y: int
    colour: int
    spans: int
    errors: int


@dataclass(frozen=True)
class EdgePath:
    parent: str
    child: str
    calls: int
    errors: int
    path: str  # SVG path data
    label_x: int
    label_y: int
    label_anchor: str = "middle"


@dataclass(frozen=True)
class MapDrawing:
    width: int
    height: int
    nodes: list[NodeBox]
    edges: list[EdgePath]


def columns(service_map: ServiceMap) -> dict[str, int]:
    """Column of each service: longest chain of callers before it (cycles cut by a depth bound)."""
    services = [node.service for node in service_map.nodes]
    for edge in service_map.edges:
        for service in (edge.parent, edge.child):
            if service not in services:
                services.append(service)
    column = dict.fromkeys(services, 0)
    for _ in range(len(services)):  # Bellman-Ford style relaxation; a cycle stops at len(services)
        changed = False
        for edge in service_map.edges:
            if column[edge.child] < column[edge.parent] + 1 <= len(services):
                column[edge.child] = column[edge.parent] + 1
                changed = True
        if not changed:
            break
    return column


def draw(service_map: ServiceMap, known_services: list[str] | None = None) -> MapDrawing:
    """`known_services`: every service of the store, so that a service has the same colour on every page."""
    column = columns(service_map)
    counts = {node.service: node for node in service_map.nodes}
    colours = service_colours([*(known_services or []), *sorted(column)])
    rows: dict[int, int] = {}
    boxes: dict[str, NodeBox] = {}
    for service in sorted(column, key=lambda service: (column[service], service)):
        row = rows.get(column[service], 0)
        rows[column[service]] = row + 1
        node = counts.get(service)
        boxes[service] = NodeBox(
            service,
            MARGIN + column[service] * (NODE_WIDTH + COLUMN_GAP),
            MARGIN + row * (NODE_HEIGHT + ROW_GAP),
            colours[service],
            node.spans if node else 0,
            node.errors if node else 0,
        )
    edges = [_edge_path(boxes[edge.parent], boxes[edge.child], edge) for edge in service_map.edges]
    width = MARGIN * 2 + (max(column.values(), default=0) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    bows = [edge.label_y + 20 for edge in edges]
    height = max([MARGIN * 2 + max(rows.values(), default=1) * (NODE_HEIGHT + ROW_GAP), *bows])
    return MapDrawing(width, height, list(boxes.values()), edges)


def _edge_path(parent: NodeBox, child: NodeBox, edge: ServiceEdge) -> EdgePath:
    x1, y1 = parent.x + NODE_WIDTH, parent.y + NODE_HEIGHT // 2
    x2, y2 = child.x, child.y + NODE_HEIGHT // 2
    skipped = max(0, (child.x - parent.x) // (NODE_WIDTH + COLUMN_GAP) - 1)
    if x2 <= parent.x:  # a call back to the left (or within a column): loop under the nodes
        x1, x2 = parent.x + NODE_WIDTH // 2, child.x + NODE_WIDTH // 2
        y1, y2 = parent.y + NODE_HEIGHT, child.y + NODE_HEIGHT
        bow = NODE_HEIGHT + 40
        path = f"M{x1},{y1} C{x1},{y1 + bow} {x2},{y2 + bow} {x2},{y2}"
        label_x, label_y = (x1 + x2) // 2, max(y1, y2) + bow - 10
    elif skipped:
        bow = (NODE_HEIGHT + ROW_GAP) * skipped
        path = f"M{x1},{y1} C{x1 + 80},{y1 + bow} {x2 - 80},{y2 + bow} {x2},{y2}"
        # Under the lowest point of the curve (3/4 of the bow for these control points).
        label_x, label_y = (x1 + x2) // 2, (y1 + y2) // 2 + bow * 3 // 4 + 18
    else:
        path = f"M{x1},{y1} C{(x1 + x2) // 2},{y1} {(x1 + x2) // 2},{y2} {x2},{y2}"
        if y1 == y2:
            label_x, label_y = (x1 + x2) // 2, y1 - 8
        else:  # an S-curve between rows: the label beside its start, clear of the bend
            below = 16 if y2 > y1 else -8
            return EdgePath(
                edge.parent, edge.child, edge.calls, edge.errors, path, x1 + 8, y1 + below, "start"
            )
    return EdgePath(edge.parent, edge.child, edge.calls, edge.errors, path, label_x, label_y)
