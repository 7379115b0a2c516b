//! `contoso.entitlements.v1.EntitlementService`, forwarded to accept-svc with the caller's token.

use contoso_proto::entitlements::v1::{
    AssignSeatRequest, AssignSeatResponse, ListEntitlementsRequest, ListEntitlementsResponse,
    RevokeSeatRequest, RevokeSeatResponse, entitlement_service_client::EntitlementServiceClient,
    entitlement_service_server::EntitlementService,
};
use tonic::{Request, Response, Status, transport::Channel};

use super::unary;

const UPSTREAM: &str = "accept-svc";

#[derive(Debug, Clone)]
pub(crate) struct EntitlementForwarder {
    client: EntitlementServiceClient<Channel>,
}

impl EntitlementForwarder {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: EntitlementServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl EntitlementService for EntitlementForwarder {
    #[tracing::instrument(skip_all, fields(rpc = "ListEntitlements", request_id))]
    async fn list_entitlements(
        &self,
        request: Request<ListEntitlementsRequest>,
    ) -> Result<Response<ListEntitlementsResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.list_entitlements(r).await
        })
        .await
    }

    #[tracing::instrument(
        skip_all,
        fields(rpc = "AssignSeat", request_id, entitlement_id = request.get_ref().entitlement_id),
    )]
    async fn assign_seat(
        &self,
        request: Request<AssignSeatRequest>,
    ) -> Result<Response<AssignSeatResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.assign_seat(r).await
        })
        .await
    }

    #[tracing::instrument(
        skip_all,
        fields(rpc = "RevokeSeat", request_id, entitlement_id = request.get_ref().entitlement_id),
    )]
    async fn revoke_seat(
        &self,
        request: Request<RevokeSeatRequest>,
    ) -> Result<Response<RevokeSeatResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.revoke_seat(r).await
        })
        .await
    }
}
