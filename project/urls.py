from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("project.demo.urls")),
]

try:  # Prometheus metrics, with the 'prometheus' extra (docs/worker.md)
    from jobs.metrics import MetricsView
except ImportError:
    pass
else:
    urlpatterns.append(path("metrics/", MetricsView.as_view(), name="metrics"))
