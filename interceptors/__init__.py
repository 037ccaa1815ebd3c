"""grpc.aio interceptors, one concern per module, each knowing nothing about any service.

The server chain's modules run compiled when a build of their current source exists
(interceptors.compiled).
"""

from interceptors.compiled import use_build

use_build(__path__)
