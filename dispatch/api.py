from __future__ import annotations

import uuid

from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from dispatch import selectors, services
from dispatch.models import SignalSource
from dispatch.serializers import DispatchDetailSerializer, SignalCreatedSerializer, SignalCreateSerializer


class SignalViewSet(viewsets.ViewSet):
    """Submit a flexibility signal; it is dispatched to the fleet at once."""

    serializer_class = SignalCreateSerializer

    def create(self, request):
        incoming = SignalCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            signal, dispatch = services.signal_submit(source=SignalSource.API, **incoming.validated_data)
        except services.SignalRejected as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        url = reverse("dispatch-detail", args=[dispatch.id], request=request)
        body = SignalCreatedSerializer({"signal_id": signal.id, "dispatch_id": dispatch.id, "url": url}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": url})


class DispatchViewSet(viewsets.ViewSet):
    """A dispatch: its rounds, commands, and requested / allocated / acknowledged power."""

    serializer_class = DispatchDetailSerializer
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def retrieve(self, request, pk=None):
        try:
            dispatch_id = uuid.UUID(str(pk))
        except ValueError:
            raise NotFound(f"no dispatch {pk}") from None
        detail = selectors.dispatch_detail(dispatch_id)
        if detail is None:
            raise NotFound(f"no dispatch {pk}")
        return Response(DispatchDetailSerializer(detail).data)
