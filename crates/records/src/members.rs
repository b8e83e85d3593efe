//! Image members: the projects an image is shared with, and their answers.

use domain::{MemberStatus, Visibility};
use sqlx::FromRow;

use crate::{Db, DbError};

/// A project an image is shared with.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct MemberRow {
    pub image_id: String,
    pub image_name: String,
    pub project_id: String,
    pub project_name: String,
    pub owner_name: String,
    pub status: MemberStatus,
    pub created_at: String,
    pub updated_at: String,
}

/// What [`Db::add_image_member_within`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAdded {
    Added,
    /// The project was a member already (its membership is unchanged).
    Exists,
    /// The image has its maximum number of members.
    Full,
    /// The image is not `shared` (any more), or is gone.
    NotShared,
}

const MEMBER_SELECT: &str = "SELECT m.image_id, i.name AS image_name, m.project_id, p.name AS project_name, \
     COALESCE(o.name, '') AS owner_name, m.status, m.created_at, m.updated_at \
     FROM image_members m JOIN images i ON i.id = m.image_id JOIN projects p ON p.id = m.project_id \
     LEFT JOIN projects o ON o.id = i.owner";

impl Db {
    /// Shares an image with a project (status `pending`), whatever its visibility; an existing
    /// membership is kept as is. The use-case is [`Db::add_image_member_within`].
    pub async fn add_image_member(&self, image_id: &str, project_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("INSERT INTO image_members (image_id, project_id) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(image_id)
            .bind(project_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Shares a `shared` image with a project (status `pending`) unless the image already has
    /// `max` members. Both are checked by the insert itself, so parallel shares cannot pass the
    /// limit, nor can a share land on an image made private meanwhile.
    pub async fn add_image_member_within(&self, image_id: &str, project_id: &str, max: i64) -> Result<MemberAdded, DbError> {
        let done = sqlx::query(
            "INSERT INTO image_members (image_id, project_id) SELECT ?1, ?2 \
             WHERE (SELECT COUNT(*) FROM image_members WHERE image_id = ?1) < ?3 \
             AND (SELECT visibility FROM images WHERE id = ?1) = 'shared' ON CONFLICT DO NOTHING",
        )
        .bind(image_id)
        .bind(project_id)
        .bind(max)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 1 {
            return Ok(MemberAdded::Added);
        }
        if self.image_member(image_id, project_id).await?.is_some() {
            return Ok(MemberAdded::Exists);
        }
        let visibility = self.image(image_id).await?.map(|i| i.visibility);
        Ok(if visibility == Some(Visibility::Shared) { MemberAdded::Full } else { MemberAdded::NotShared })
    }

    pub async fn remove_image_member(&self, image_id: &str, project_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM image_members WHERE image_id = ? AND project_id = ?")
            .bind(image_id)
            .bind(project_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A member project's answer: `accepted`, `rejected` or back to `pending`.
    pub async fn set_image_member_status(&self, image_id: &str, project_id: &str, status: MemberStatus) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE image_members SET status = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
             WHERE image_id = ? AND project_id = ?",
        )
        .bind(status)
        .bind(image_id)
        .bind(project_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The membership of `project_id` in `image_id`, if any.
    pub async fn image_member(&self, image_id: &str, project_id: &str) -> Result<Option<MemberRow>, DbError> {
        let sql = format!("{MEMBER_SELECT} WHERE m.image_id = ? AND m.project_id = ?");
        Ok(sqlx::query_as(&sql).bind(image_id).bind(project_id).fetch_optional(self.pool()).await?)
    }

    pub async fn image_members(&self, image_id: &str) -> Result<Vec<MemberRow>, DbError> {
        let sql = format!("{MEMBER_SELECT} WHERE m.image_id = ? ORDER BY p.name");
        Ok(sqlx::query_as(&sql).bind(image_id).fetch_all(self.pool()).await?)
    }

    /// Images shared with `project_id` that it has not answered yet.
    pub async fn pending_shares(&self, project_id: &str) -> Result<Vec<MemberRow>, DbError> {
        let sql = format!("{MEMBER_SELECT} WHERE m.project_id = ? AND m.status = 'pending' ORDER BY m.created_at DESC");
        Ok(sqlx::query_as(&sql).bind(project_id).fetch_all(self.pool()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewImage;

    use crate::test_db::temp_db;

    /// The member limit holds when shares race: the count is taken by the insert itself.
    #[tokio::test]
    async fn parallel_shares_stop_at_the_member_limit() {
        let (_dir, db) = temp_db().await;
        let owner = db.create_project("owner", "").await.unwrap().id;
        let img = db.create_image(&NewImage { name: "i".into(), owner: Some(owner), ..Default::default() }).await.unwrap();
        let mut projects = Vec::new();
        for i in 0..8 {
            projects.push(db.create_project(&format!("p{i}"), "").await.unwrap().id);
        }
        let results = futures::future::join_all(projects.iter().map(|p| db.add_image_member_within(&img.id, p, 3))).await;
        let added = results.iter().filter(|r| matches!(r, Ok(MemberAdded::Added))).count();
        let full = results.iter().filter(|r| matches!(r, Ok(MemberAdded::Full))).count();
        assert_eq!((added, full), (3, 5), "{results:?}");
        assert_eq!(db.image_members(&img.id).await.unwrap().len(), 3);
        let member = projects.iter().zip(&results).find(|(_, r)| matches!(r, Ok(MemberAdded::Added))).map(|(p, _)| p).unwrap();
        assert_eq!(db.add_image_member_within(&img.id, member, 3).await.unwrap(), MemberAdded::Exists, "a member stays a member");
    }

    /// A share lands only on an image that is `shared` when the row is written: one made private
    /// between the use-case's read and the insert gets no member.
    #[tokio::test]
    async fn a_share_needs_a_shared_image_at_the_insert() {
        let (_dir, db) = temp_db().await;
        let owner = db.create_project("owner", "").await.unwrap().id;
        let other = db.create_project("other", "").await.unwrap().id;
        let img = db.create_image(&NewImage { name: "i".into(), owner: Some(owner), ..Default::default() }).await.unwrap();
        sqlx::query("UPDATE images SET visibility = 'private' WHERE id = ?").bind(&img.id).execute(db.pool()).await.unwrap();
        assert_eq!(db.add_image_member_within(&img.id, &other, 3).await.unwrap(), MemberAdded::NotShared);
        assert!(db.image_members(&img.id).await.unwrap().is_empty());
        assert_eq!(db.add_image_member_within("no-such-image", &other, 3).await.unwrap(), MemberAdded::NotShared);
        sqlx::query("UPDATE images SET visibility = 'shared' WHERE id = ?").bind(&img.id).execute(db.pool()).await.unwrap();
        assert_eq!(db.add_image_member_within(&img.id, &other, 3).await.unwrap(), MemberAdded::Added);
    }
}
