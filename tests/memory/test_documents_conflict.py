"""Documents are not overwritten by accident: an id that holds another text needs `replace`."""

import pytest

from cls_ray.memory.retriever import DocumentConflict


def test_an_id_holding_another_text_needs_replace(tiny_stack):
    r = tiny_stack.retriever
    ids = ["t-conflict-1", "t-conflict-2"]
    try:
        assert r.add_documents([{"id": ids[0], "text": "Ada wrote the first program."}]) == 1
        # the same text again is a no-op write, not a conflict
        assert r.add_documents([{"id": ids[0], "text": "Ada wrote the first program."}]) == 1
        with pytest.raises(DocumentConflict, match="t-conflict-1.*replace: true"):
            r.add_documents(
                [
                    {"id": ids[1], "text": "new and fine"},
                    {"id": ids[0], "text": "Ada never wrote a program."},
                ]
            )
        # refused whole: neither document was written
        assert r.get_documents(ids) == {ids[0]: "Ada wrote the first program."}
        r.add_documents([{"id": ids[0], "text": "Ada wrote the first program (1843)."}], True)
        assert r.get_documents(ids[:1]) == {ids[0]: "Ada wrote the first program (1843)."}
    finally:
        tiny_stack.store.delete(ids)
