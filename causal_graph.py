"""Causal graphs over image labels: the reference's named graphs, JSON graphs, validation.

A graph is an ordered list of ``(node, [parents])``. Node names must match the
dataset's attribute names exactly. ``get_causal_graph`` accepts a key of
``GRAPHS`` or a path to a JSON file and returns a validated graph whose nodes are in a
topological order that keeps the given order wherever the edges allow.
"""

import json
from pathlib import Path

from errors import UserError

# The 40 CelebA attributes in the column order of list_attr_celeba.txt.
CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]

BIG_GRAPH_NODES = ["Young", "Male", "Eyeglasses", "Bald", "Mustache", "Smiling",
                   "Wearing_Lipstick", "Mouth_Slightly_Open", "Narrow_Eyes"]


def complete_graph(nodes):
    """Every node caused by all the nodes listed before it."""
    return [[node, list(nodes[:i])] for i, node in enumerate(nodes)]


def independent_graph(nodes):
    """The nodes with no edges."""
    return [[node, []] for node in nodes]


GRAPHS = {
    "standard_graph": [["Male", []], ["Young", []], ["Smiling", ["Male", "Young"]]],
    "male_causes_beard": [["Male", []], ["No_Beard", ["Male"]]],
    "male_causes_mustache": [["Male", []], ["Mustache", ["Male"]]],
    "mustache_causes_male": [["Male", ["Mustache"]], ["Mustache", []]],
    "young_causes_gray": [["Young", []], ["Gray_Hair", ["Young"]]],
    "gray_causes_young": [["Young", ["Gray_Hair"]], ["Gray_Hair", []]],
    "young_ind_gray": [["Young", []], ["Gray_Hair", []]],
    "small_causal_graph": [
        ["Young", []], ["Male", []], ["Mustache", ["Male", "Young"]],
        ["Smiling", ["Male", "Young"]], ["Wearing_Lipstick", ["Male", "Young"]],
        ["Mouth_Slightly_Open", ["Male", "Young", "Smiling"]],
        ["Narrow_Eyes", ["Male", "Young", "Smiling"]]],
    "big_causal_graph": [
        ["Young", []], ["Male", []], ["Eyeglasses", ["Young"]], ["Bald", ["Male", "Young"]],
        ["Mustache", ["Male", "Young"]], ["Smiling", ["Male", "Young"]],
        ["Wearing_Lipstick", ["Male", "Young"]], ["Mouth_Slightly_Open", ["Young", "Smiling"]],
        ["Narrow_Eyes", ["Male", "Young", "Smiling"]]],
    "complete_big_causal_graph": complete_graph(BIG_GRAPH_NODES),
    "reverse_complete_big_causal_graph": complete_graph(BIG_GRAPH_NODES[::-1]),
    "indep_big_causal_graph": independent_graph(BIG_GRAPH_NODES),
    "complete_minimal_graph": [
        ["Young", []], ["Male", ["Young"]], ["Mustache", ["Male", "Young"]],
        ["Wearing_Lipstick", ["Male", "Young", "Mustache"]],
        ["Smiling", ["Male", "Young", "Mustache", "Wearing_Lipstick"]]],
    "male_ind_mustache": [["Male", []], ["Mustache", []]],
    "Smiling_MSO": [["Smiling", []], ["Mouth_Slightly_Open", ["Smiling"]]],
    "MSO_smiling": [["Smiling", ["Mouth_Slightly_Open"]], ["Mouth_Slightly_Open", []]],
    "Male_Young_Eyeglasses": [["Male", []], ["Young", []], ["Eyeglasses", ["Male", "Young"]]],
    "Male_Young_Eyeglasses_complete": [
        ["Male", []], ["Young", ["Male"]], ["Eyeglasses", ["Male", "Young"]]],
    "MYESO": [
        ["Male", []], ["Young", ["Male"]], ["Eyeglasses", ["Male", "Young"]],
        ["Smiling", ["Male", "Young", "Eyeglasses"]],
        ["Mouth_Slightly_Open", ["Male", "Young", "Eyeglasses", "Smiling"]]],
    "mustache": [["Mustache", []]],
    "M": [["Male", []]],
    "male_smiling_lipstick": [["Male", []], ["Wearing_Lipstick", ["Male"]], ["Smiling", ["Male"]]],
    "SLM": [["Smiling", []], ["Wearing_Lipstick", ["Smiling"]],
            ["Male", ["Smiling", "Wearing_Lipstick"]]],
    "MLS": [["Male", []], ["Wearing_Lipstick", ["Male"]], ["Smiling", ["Male", "Wearing_Lipstick"]]],
    "male_mustache_lipstick": [["Male", []], ["Mustache", ["Male"]],
                               ["Wearing_Lipstick", ["Male", "Mustache"]]],
    "subset1_nodes": independent_graph([
        "Bald", "Double_Chin", "Male", "Mustache", "No_Beard", "Smiling", "Wearing_Earrings",
        "Wearing_Lipstick", "Young"]),
    "complete_all": complete_graph(CELEBA_ATTRIBUTES),
}


def _read_json_graph(path):
    """A graph from a JSON file: {"node": [parents], ...} or [["node", [parents]], ...]."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read the graph file {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"the graph file {path} is not valid JSON: {err}") from None
    if isinstance(content, dict):
        pairs = list(content.items())
    elif isinstance(content, list) and all(
            isinstance(item, (list, tuple)) and len(item) == 2 for item in content):
        pairs = [tuple(item) for item in content]
    else:
        raise UserError(
            f"the graph file {path} must hold an object {{\"node\": [\"parent\", ...]}} or a "
            "list of [\"node\", [\"parent\", ...]] pairs")
    for node, parents in pairs:
        if not isinstance(node, str) or not isinstance(parents, list) or not all(
                isinstance(parent, str) for parent in parents):
            raise UserError(f"in {path}: node {node!r} must be a name with a list of parent "
                            f"names, got {parents!r}")
    return [[node, list(parents)] for node, parents in pairs]


def _find_cycle(parents_of):
    """Some cycle of the graph as a list of nodes (first == last), or None."""
    state = {}  # node -> "open" while on the DFS stack, "done" afterwards

    def visit(node, path):
        state[node] = "open"
        path.append(node)
        for parent in parents_of[node]:
            if state.get(parent) == "open":
                return path[path.index(parent):] + [parent]
            if parent not in state:
                cycle = visit(parent, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in parents_of:
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def validate_graph(graph, source="the graph"):
    """Check a list of (node, parents) and return it in a stable topological order."""
    if not graph:
        raise UserError(f"{source} has no nodes; give at least one label")
    parents_of = {}
    for node, parents in graph:
        if node in parents_of:
            raise UserError(f"{source} lists the node {node!r} twice")
        parents_of[node] = list(parents)
    for node, parents in parents_of.items():
        if node in parents:
            raise UserError(f"{source}: node {node!r} is its own parent (a self-loop)")
        if len(set(parents)) != len(parents):
            raise UserError(f"{source}: node {node!r} lists a parent twice: {parents}")
        unknown = [parent for parent in parents if parent not in parents_of]
        if unknown:
            raise UserError(f"{source}: the parents {unknown} of {node!r} are not nodes of the "
                            "graph; add them as nodes (with their own parents, or [])")
    cycle = _find_cycle(parents_of)
    if cycle:
        # _find_cycle follows child -> parent; show it in the causal direction.
        arrow = " -> ".join(reversed(cycle))
        raise UserError(f"{source} has a cycle: {arrow}; a causal graph must be acyclic")
    ordered, placed = [], set()
    while len(ordered) < len(parents_of):
        for node, parents in parents_of.items():
            if node not in placed and all(parent in placed for parent in parents):
                ordered.append((node, parents))
                placed.add(node)
                break
    return ordered


def get_causal_graph(causal_model):
    """The validated, topologically ordered graph for a GRAPHS key or a JSON file path."""
    if causal_model is None or str(causal_model).strip() == "":
        raise UserError("--causal_model is required: give a graph name (e.g. "
                        "big_causal_graph) or a JSON file; known names: "
                        + ", ".join(sorted(GRAPHS)))
    name = str(causal_model).strip()
    if name in GRAPHS:
        return validate_graph(GRAPHS[name], source=f"graph {name!r}")
    if name.lower().endswith(".json") or Path(name).is_file():
        if not Path(name).is_file():
            raise UserError(f"the graph file {name} does not exist")
        return validate_graph(_read_json_graph(name), source=f"graph file {name}")
    raise UserError(f"unknown causal graph {name!r}; known graphs: {', '.join(sorted(GRAPHS))} "
                    "(or give a path to a JSON graph file)")


def descendants(graph, node: str) -> list[str]:
    """The nodes that have ``node`` as an ancestor in ``graph`` [(node, [parents])], in the
    graph's order (any order of the graph's rows gives the same set)."""
    children: dict[str, list[str]] = {}
    for child, parents in graph:
        for parent in parents:
            children.setdefault(parent, []).append(child)
    found, todo = set(), [node]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return [name for name, _ in graph if name in found]


def node_names(graph):
    """The node names of a graph, in its order."""
    return [node for node, _ in graph]
