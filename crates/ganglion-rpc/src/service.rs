//! The `service!` macro: one list of calls becomes a service's trait, its gRPC client (on
//! [`RemoteMaster`](crate::grpc::RemoteMaster)) and its gRPC server (on the server's adapter).
//!
//! Each entry `fn method(Request) -> Output as Message;` names the request type (a
//! [`Call`](crate::Call)), the domain answer and the gRPC message the answer crosses as (the
//! answer implements [`Answer<Message>`](crate::Answer)). The proto's service must have an rpc
//! of the same name (in CamelCase) taking the request's message and returning `Message`.
//! Retries, deadlines, trace context, error mapping and the worker's read-your-writes wait are
//! the client's and the server's, once for every call.

macro_rules! service {
    (
        $(#[$doc:meta])*
        pub trait $Trait:ident: $server:ident::$Server:ident, $client:ident::$Client:ident {
            $( $(#[$method_doc:meta])* fn $method:ident($Request:ty) -> $Output:ty as $Response:ty; )*
        }
    ) => {
        $(#[$doc])*
        #[async_trait::async_trait]
        pub trait $Trait: Send + Sync + 'static {
            $( $(#[$method_doc])* async fn $method(&self, request: $Request) -> $crate::MasterResult<$Output>; )*
        }

        #[async_trait::async_trait]
        impl $Trait for $crate::grpc::RemoteMaster {
            $(
                async fn $method(&self, request: $Request) -> $crate::MasterResult<$Output> {
                    let answer: $Response = self
                        .call(request, |channel, message| async move {
                            ganglion_proto::master::v1::$client::$Client::new(channel).$method(message).await
                        })
                        .await?;
                    <$Output as $crate::Answer<$Response>>::from_message(answer)
                        .map_err($crate::grpc::invalid_answer)
                }
            )*
        }

        #[tonic::async_trait]
        impl<S: $Trait + $crate::Streams + ?Sized> ganglion_proto::master::v1::$server::$Server
            for $crate::grpc::Adapter<S>
        {
            $(
                async fn $method(
                    &self,
                    request: tonic::Request<<$Request as $crate::Call>::Message>,
                ) -> Result<tonic::Response<$Response>, tonic::Status> {
                    self.serve(stringify!($method), request, |service, message| async move {
                        let request = <$Request as $crate::Call>::from_message(message)?;
                        let answer = service.$method(request).await?;
                        Ok(<$Output as $crate::Answer<$Response>>::into_message(answer))
                    })
                    .await
                }
            )*
        }

        /// Records the request and answers with a canned value.
        #[cfg(test)]
        #[async_trait::async_trait]
        impl $Trait for $crate::grpc::tests::Fake {
            $(
                async fn $method(&self, request: $Request) -> $crate::MasterResult<$Output> {
                    self.answer(request).await
                }
            )*
        }
    };
}
