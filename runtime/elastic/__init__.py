"""Elastic runtime: elastic ops, `SearchSpace`, `SuperNetwork` (activate, extract, macs, save/load).

Knows torch only (never the compiler IR or the passes), so a saved super-network can be loaded,
trained and searched without re-tracing the user's model. See each module's docstring for its
rules.
"""
from runtime.elastic.base import ElasticOp
from runtime.elastic.bindings import Bindings, DepthBinding, KernelBinding, OpBinding
from runtime.elastic.blocks import SkipBlock
from runtime.elastic.channels import (ChannelMap, Segment, Selection, Selector, active_size,
                                      full_size, select, take)
from runtime.elastic.conv import ElasticConv
from runtime.elastic.cost import measure_out_spatial
from runtime.elastic.extract import extract_graph_module, extract_module
from runtime.elastic.ops import (ElasticBatchNorm, ElasticGroupNorm, ElasticLayerNorm, ElasticLinear,
                                 ElasticParameter, wrap)
from runtime.elastic.space import Dimension, SearchSpace, SubnetConfig
from runtime.elastic.supernet import SuperNetwork, SupernetFileError

__all__ = [
    "ElasticOp", "ElasticConv", "ElasticLinear", "ElasticBatchNorm", "ElasticLayerNorm",
    "ElasticGroupNorm", "ElasticParameter", "wrap", "SkipBlock",
    "Segment", "ChannelMap", "Selection", "Selector", "select", "active_size", "full_size", "take",
    "Dimension", "SearchSpace", "SubnetConfig",
    "Bindings", "OpBinding", "KernelBinding", "DepthBinding",
    "SuperNetwork", "SupernetFileError", "measure_out_spatial",
    "extract_graph_module", "extract_module",
]
