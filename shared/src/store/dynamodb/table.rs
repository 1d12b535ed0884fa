//! The table's definition, for `DYNAMODB_CREATE_TABLE` in development and
//! tests. In production template.yaml defines the same table.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::{
    Client,
    error::ProvideErrorMetadata,
    types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, LocalSecondaryIndex,
        Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    },
};

/// The local index that lists a user's sessions by activity.
pub const BY_ACTIVITY: &str = "by_activity";
/// Epoch seconds after which DynamoDB may delete an item (refresh tokens).
pub const TTL_ATTRIBUTE: &str = "ttl";

pub async fn create_if_absent(client: &Client, table: &str) -> anyhow::Result<()> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(()),
        Err(err) if err.code() == Some("ResourceNotFoundException") => {}
        Err(err) => {
            return Err(anyhow::anyhow!(
                "describing DynamoDB table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(err)
            ));
        }
    }
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("pk")?)
        .attribute_definitions(string_attribute("sk")?)
        .attribute_definitions(string_attribute("activity")?)
        .key_schema(key_element("pk", KeyType::Hash)?)
        .key_schema(key_element("sk", KeyType::Range)?)
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(BY_ACTIVITY)
                .key_schema(key_element("pk", KeyType::Hash)?)
                .key_schema(key_element("activity", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Another process created it first.
        Err(err) if err.code() == Some("ResourceInUseException") => {}
        Err(err) => {
            return Err(anyhow::anyhow!(
                "creating DynamoDB table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(err)
            ));
        }
    }
    wait_until_active(client, table).await?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .map(|_| ())
        .or_else(|err| match err.code() {
            // Already enabled, by a concurrent start.
            Some("ValidationException") => Ok(()),
            _ => Err(anyhow::anyhow!(
                "enabling TTL on {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(err)
            )),
        })
}

async fn wait_until_active(client: &Client, table: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("describing DynamoDB table {table}"))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("DynamoDB table {table} did not become active within a minute")
}

fn string_attribute(name: &str) -> anyhow::Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

fn key_element(name: &str, key_type: KeyType) -> anyhow::Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()?)
}
