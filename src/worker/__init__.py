"""Chart workers: the process loop (``main``) and the chart drawing (``charts``, ``chart_data``)."""
