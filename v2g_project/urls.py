from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from console.api import DashboardSummaryView
from console.views import favicon
from dispatch.api import DispatchLogView, DispatchViewSet, SignalViewSet, VehicleStatusView
from fleet.api import FleetViewSet, VehicleViewSet
from kpis.api import VehicleKpisView
from scheduler.api import PlanCsvView, PlanDeliveryView, PlanJsonView
from v2g_project.health import healthz, readyz
from v2g_project.metrics import metrics_view

router = DefaultRouter()
router.register("fleets", FleetViewSet, basename="fleet")
router.register("vehicles", VehicleViewSet, basename="vehicle")
router.register("signals", SignalViewSet, basename="signal")
router.register("dispatches", DispatchViewSet, basename="dispatch")

# Unknown URLs under /api/ are a JSON 404 like the API's own (when DEBUG is off).
handler404 = "v2g_project.api.not_found"
# A body over the upload limit (and the like) is a JSON 413/400 naming the limit under /api/.
handler400 = "v2g_project.api.bad_request"

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the router: "status" is not a vehicle id.
    path("api/vehicles/status", VehicleStatusView.as_view(), name="vehicle-status"),
    path("api/vehicles/status/", VehicleStatusView.as_view(schema=None)),  # an alias, not documented twice
    # Before the router too: a vehicle id holds no "/" but may hold dots ("car.1").
    re_path(r"^api/vehicles/(?P<id>[^/]+)/kpis$", VehicleKpisView.as_view(), name="vehicle-kpis"),
    re_path(r"^api/vehicles/(?P<id>[^/]+)/kpis/$", VehicleKpisView.as_view(schema=None)),  # an alias
    path("api/dashboard/summary", DashboardSummaryView.as_view(), name="dashboard-summary"),
    path("api/dashboard/summary/", DashboardSummaryView.as_view(schema=None)),  # an alias
    path("api/dispatch/logs", DispatchLogView.as_view(), name="dispatch-log"),
    path("api/dispatch/logs/", DispatchLogView.as_view(schema=None)),  # an alias, not documented twice
    # Day-ahead plans; the .csv route first: "<date>" would also match "2025-03-30.csv".
    path("api/plans/<str:date>.csv", PlanCsvView.as_view(), name="plan-csv"),
    path("api/plans/<str:date>.csv/", PlanCsvView.as_view(schema=None)),  # an alias
    path("api/plans/<str:date>/delivery", PlanDeliveryView.as_view(), name="plan-delivery"),
    path("api/plans/<str:date>/delivery/", PlanDeliveryView.as_view(schema=None)),  # an alias
    path("api/plans/<str:date>/", PlanJsonView.as_view(), name="plan-detail"),
    path("api/plans/<str:date>", PlanJsonView.as_view(schema=None)),  # an alias
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),  # liveness: the process answers
    path("readyz", readyz, name="readyz"),  # readiness: database, Celery broker, MQTT broker
]
