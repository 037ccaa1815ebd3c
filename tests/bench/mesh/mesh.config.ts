// Composes Nova's three gRPC services into one supergraph for Hive Gateway.
// Endpoints stay as {env.*} templates, so one composed file serves any rig: the gRPC
// transport interpolates them when the gateway starts.
import { defineConfig } from '@graphql-mesh/compose-cli';
import { loadGrpcSubgraph } from '@omnigraph/grpc';

const PROTOS = '../../../protos';

function nova(name: string, file: string, env: string) {
  return {
    sourceHandler: loadGrpcSubgraph(name, {
      endpoint: `{env.${env}}`,
      source: { file: `${PROTOS}/${file}`, load: { includeDirs: [PROTOS], defaults: true } },
      // Nova's services read the caller from this header.
      metaData: { authorization: '{context.headers.authorization}' },
      // The Batch* reads are queries, not mutations.
      prefixQueryMethod: ['get', 'list', 'batch'],
    }),
  };
}

export const composeConfig = defineConfig({
  subgraphs: [
    nova('User', 'nova/user/v1/user.proto', 'NOVA_USER_ADDR'),
    nova('Content', 'nova/content/v1/content.proto', 'NOVA_CONTENT_ADDR'),
    nova('Feed', 'nova/feed/v1/feed.proto', 'NOVA_FEED_ADDR'),
  ],
  // Declarative batching: each hop is one Batch* RPC per page. @resolveTo collects the
  // keys of every parent in the result (DataLoader, deduplicated) into keysArg and matches
  // results back by valueKeyField, so repeated authors and missing ids map correctly.
  // BatchListComments gets no limit_per_post: 0 means Nova's default of 3.
  additionalTypeDefs: /* GraphQL */ `
    extend type nova__feed__v1__FeedItem {
      post: nova__content__v1__Post
        @resolveTo(
          sourceName: "Content"
          sourceTypeName: "Query"
          sourceFieldName: "nova_content_v1_ContentService_BatchGetPosts"
          keyField: "post_id"
          keysArg: "input.ids"
          result: "posts"
          valueKeyField: "id"
          requiredSelectionSet: "{ post_id }"
        )
    }
    extend type nova__content__v1__Post {
      author: nova__user__v1__User
        @resolveTo(
          sourceName: "User"
          sourceTypeName: "Query"
          sourceFieldName: "nova_user_v1_UserService_BatchGetUsers"
          keyField: "author_id"
          keysArg: "input.ids"
          result: "users"
          valueKeyField: "id"
          requiredSelectionSet: "{ author_id }"
        )
      stats: nova__content__v1__PostStats
        @resolveTo(
          sourceName: "Content"
          sourceTypeName: "Query"
          sourceFieldName: "nova_content_v1_ContentService_BatchGetPostStats"
          keyField: "id"
          keysArg: "input.post_ids"
          result: "stats"
          valueKeyField: "post_id"
          requiredSelectionSet: "{ id }"
        )
      latestComments: nova__content__v1__PostComments
        @resolveTo(
          sourceName: "Content"
          sourceTypeName: "Query"
          sourceFieldName: "nova_content_v1_ContentService_BatchListComments"
          keyField: "id"
          keysArg: "input.post_ids"
          result: "posts"
          valueKeyField: "post_id"
          requiredSelectionSet: "{ id }"
        )
    }
    extend type nova__content__v1__Comment {
      author: nova__user__v1__User
        @resolveTo(
          sourceName: "User"
          sourceTypeName: "Query"
          sourceFieldName: "nova_user_v1_UserService_BatchGetUsers"
          keyField: "author_id"
          keysArg: "input.ids"
          result: "users"
          valueKeyField: "id"
          requiredSelectionSet: "{ author_id }"
        )
    }
  `,
});
