"""Compute kernels: ``cpu`` (Numba ``@njit(parallel=True)``) and ``cuda`` (``@cuda.jit``).

The two packages mirror each other file for file and name for name.  A kernel
takes arrays, a pre-allocated output and already-resolved integer geometry;
it never validates, allocates the result, or reads strings.  The integer codes
below stand in for the words of the functional API.
"""

# pooling modes (cnnlab.functional.pool2d's ``mode``)
POOL_MAX = 0
POOL_AVG = 1
POOL_MIN = 2
POOL_MEDIAN = 3
POOL_LP = 4

# boundaries of cnnlab.filters (scipy.signal's ``boundary``)
BOUNDARY_FILL = 0
BOUNDARY_WRAP = 1
BOUNDARY_SYMM = 2

# the activation a convolution kernel applies as it writes each output, with its two parameters
# low, high (cnnlab.functional.conv2d's ``activation``; 0: none)
EPILOGUE_NONE = 0
EPILOGUE_CLIP = 1  # min(max(v, low), high): relu is [0, inf], relu6 [0, 6]
EPILOGUE_LEAKY_RELU = 2  # v, or low * v below 0
EPILOGUE_HARDSIGMOID = 3  # clip(low * v + high, 0, 1)
EPILOGUE_HARDSWISH = 4
EPILOGUE_SIGMOID = 5
EPILOGUE_SILU = 6
EPILOGUE_TANH = 7
EPILOGUE_GELU = 8  # v * Phi(v), the exact form
# v where the residual array is > 0, else 0 (has_residual False): an input gradient through the
# mask of the ReLU whose output that array is (CPU convolution kernels only)
EPILOGUE_MASK = 9
