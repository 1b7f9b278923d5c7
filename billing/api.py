"""The billing API: a Stripe Checkout Session to pay for an animation's HD result."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.serializers import CheckoutSerializer
from billing.services import checkout_for_animation
from jobs.access import job_for_request
from jobs.api import TOKEN_PARAMETERS
from jobs.serializers import ErrorSerializer


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class CheckoutView(APIView):
    @extend_schema(
        operation_id="jobs_animation_checkout",
        summary="Pay for the HD result",
        description=(
            "A Stripe Checkout Session for the HD result of a succeeded animation preview: send the person "
            "to `checkout_url`. Asked again while that session is open, it answers with the same session "
            "(still 201), so a second click cannot lead to a second charge; once it has expired, a new one. "
            "Stripe brings the person back to the job's page (with `checkout=success` or `checkout=canceled`); "
            "the HD result is made once Stripe confirms the payment, and shows in the animation's `hd_` fields."
        ),
        parameters=[
            *TOKEN_PARAMETERS,
            OpenApiParameter("animation_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The animation."),
        ],
        request=None,
        responses={
            201: CheckoutSerializer,
            404: _error("`not_found`: no such job or animation, or not yours (the same answer either way)."),
            409: _error(
                "`already_paid`: the HD result is paid for; `animation_not_ready`: the preview has not "
                "succeeded; `payment_processing`: a payment by a slow method is on its way; "
                "`checkout_in_progress`: another request is making the session right now."
            ),
            503: _error(
                "`billing_disabled`: payments are not set up on this server (no Stripe keys); "
                "`payment_provider_unavailable`: Stripe cannot be reached, nothing was charged or "
                "recorded; try again after `Retry-After` seconds."
            ),
        },
        tags=["billing"],
    )
    def post(self, request: Request, job_id: str, animation_id: str) -> Response:
        job = job_for_request(request, job_id)
        checkout = checkout_for_animation(job=job, animation_id=animation_id)
        data = CheckoutSerializer(checkout).data
        return Response(data, status=status.HTTP_201_CREATED)
