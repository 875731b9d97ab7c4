"""Named graphs, JSON graphs and every validation error."""

import json

import pytest

import causal_graph
from causal_graph import CELEBA_ATTRIBUTES, GRAPHS, get_causal_graph, validate_graph
from errors import UserError


def assert_topological(graph):
    seen = set()
    for node, parents in graph:
        assert all(parent in seen for parent in parents), (node, parents)
        seen.add(node)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_named_graph_loads_in_topological_order(name):
    graph = get_causal_graph(name)
    assert_topological(graph)
    assert sorted(node for node, _ in graph) == sorted(node for node, _ in GRAPHS[name])
    assert all(node in CELEBA_ATTRIBUTES for node, _ in graph)


def test_big_causal_graph_is_causal_graph_1():
    graph = dict(get_causal_graph("big_causal_graph"))
    assert graph == {
        "Young": [], "Male": [], "Eyeglasses": ["Young"], "Bald": ["Male", "Young"],
        "Mustache": ["Male", "Young"], "Smiling": ["Male", "Young"],
        "Wearing_Lipstick": ["Male", "Young"], "Mouth_Slightly_Open": ["Young", "Smiling"],
        "Narrow_Eyes": ["Male", "Young", "Smiling"]}


def test_complete_graphs():
    complete_all = get_causal_graph("complete_all")
    assert [node for node, _ in complete_all] == CELEBA_ATTRIBUTES
    assert len(CELEBA_ATTRIBUTES) == 40
    assert complete_all[-1][1] == CELEBA_ATTRIBUTES[:-1]
    reverse = get_causal_graph("reverse_complete_big_causal_graph")
    assert reverse[0] == ("Narrow_Eyes", [])
    assert reverse[-1][0] == "Young" and len(reverse[-1][1]) == 8


def test_given_order_is_kept_where_possible():
    graph = get_causal_graph("mustache_causes_male")
    assert [node for node, _ in graph] == ["Mustache", "Male"]
    graph = validate_graph([["C", ["A"]], ["B", []], ["A", []]])
    assert [node for node, _ in graph] == ["B", "A", "C"]


def test_no_trailing_spaces_in_keys():
    assert all(key == key.strip() for key in GRAPHS)


@pytest.mark.parametrize("graph,message", [
    ([], "no nodes"),
    ([["A", []], ["A", []]], "twice"),
    ([["A", ["A"]]], "self-loop"),
    ([["A", ["Z"]]], "not nodes"),
    ([["A", ["B"]], ["B", ["C"]], ["C", ["A"]]], "cycle: "),
])
def test_invalid_graphs(graph, message):
    with pytest.raises(UserError, match=message):
        validate_graph(graph)


def test_cycle_message_names_the_cycle():
    with pytest.raises(UserError) as info:
        validate_graph([["Male", ["Bald"]], ["Bald", ["Young"]], ["Young", ["Male"]],
                        ["Smiling", []]])
    text = str(info.value)
    assert all(node in text for node in ("Male", "Bald", "Young"))
    assert "Smiling" not in text


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError) as info:
        get_causal_graph("big_casual_graph")
    assert "big_causal_graph" in str(info.value) and "complete_all" in str(info.value)


def test_missing_causal_model():
    with pytest.raises(UserError, match="--causal_model is required"):
        get_causal_graph(None)


def test_json_graph_object_and_pairs(tmp_path):
    as_object = tmp_path / "g.json"
    as_object.write_text(json.dumps({"Bald": ["Male", "Young"], "Male": [], "Young": []}))
    assert get_causal_graph(str(as_object)) == [("Male", []), ("Young", []),
                                                ("Bald", ["Male", "Young"])]
    as_pairs = tmp_path / "pairs.json"
    as_pairs.write_text(json.dumps([["Male", []], ["Mustache", ["Male"]]]))
    assert get_causal_graph(str(as_pairs)) == [("Male", []), ("Mustache", ["Male"])]


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('"Male"', "must hold"),
    ('{"Male": "Young"}', "list of parent"),
    ('{"Male": ["Young"], "Young": ["Male"]}', "cycle"),
])
def test_bad_json_graphs(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        get_causal_graph(str(path))


def test_missing_json_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_causal_graph(str(tmp_path / "nope.json"))


def test_descendants_follow_every_path_in_the_graphs_order():
    graph = causal_graph.get_causal_graph("big_causal_graph")
    below = causal_graph.descendants(graph, "Male")
    assert "Bald" in below and "Male" not in below
    names = [n for n, _ in graph]
    assert below == sorted(below, key=names.index)
    # a chain listed bottom-up still yields the whole chain
    chain = [("C", ["B"]), ("B", ["A"]), ("A", [])]
    assert causal_graph.descendants(chain, "A") == ["C", "B"]
    assert causal_graph.descendants(chain, "C") == []
