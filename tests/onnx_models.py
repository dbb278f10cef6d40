"""ONNX models written by the tests, with the oldest IR version their opset allows.

``onnx.helper.make_model`` stamps the newest IR version the installed onnx package knows; an
onnxruntime a release older than that package refuses such a file ("Unsupported model IR
version"), although nothing in it needs the newer format. cnnlab's exporter writes the oldest
IR version of the opset for the same reason.
"""


def make_model(graph, opset):
    """``graph`` as a model of the default domain's ``opset``, of the oldest IR version that has it."""
    from onnx import helper  # imported here: the tests that need onnx skip without it

    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
