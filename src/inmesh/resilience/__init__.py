"""Resilience, sans I/O: what a sidecar decides when upstreams are slow or failing.

* :mod:`~inmesh.resilience.outcome`: :class:`Outcome`, one attempt's result.
* :mod:`~inmesh.resilience.retry`: Istio's retry policy and Envoy's retry state
  (retryOn, back-off, previous hosts).
* :mod:`~inmesh.resilience.budget`: the ``max_retries`` circuit breaker and retry budgets.
* :mod:`~inmesh.resilience.admission`: connection-pool circuit breakers.
* :mod:`~inmesh.resilience.outlier`: Envoy's outlier detection.
* :mod:`~inmesh.resilience.deadline`: deadlines that travel with a request.

Everything takes an injected clock and random source; nothing here sleeps,
starts threads or touches sockets. Import the modules directly.
"""
