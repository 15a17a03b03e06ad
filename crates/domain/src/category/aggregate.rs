use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{CategoryName, Slug};
use super::{CategoryCommand, CategoryEvent};
use crate::product::Description;
use crate::validation::{FieldViolation, Violations};

/// A category as its own event history defines it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// `None` until `CategoryCreated`.
    pub id: Option<Uuid>,
    pub name: String,
    pub slug: String,
    /// `None`: a root category.
    pub parent_id: Option<Uuid>,
    pub description: String,
    pub deleted: bool,
    /// Number of events applied: the aggregate's version, which clients see as the `ETag`.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CategoryError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("category {0} already exists")]
    AlreadyExists(Uuid),
    #[error("category not found")]
    NotFound,
    #[error("category has been deleted")]
    Deleted,
    #[error("category is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
}

impl Category {
    /// Folds a history into the category it describes, as the event store does.
    pub fn replay(events: impl IntoIterator<Item = CategoryEvent>) -> Self {
        crate::replay(events)
    }

    /// Rejects commands on categories that do not exist or no longer exist, and stale versions.
    fn ensure_live(&self, expected_version: Option<u64>) -> Result<(), CategoryError> {
        crate::ensure_live(self.id.is_some(), self.deleted, self.version, expected_version).map_err(|e| match e {
            crate::NotLive::NotFound => CategoryError::NotFound,
            crate::NotLive::Deleted => CategoryError::Deleted,
            crate::NotLive::VersionMismatch { expected, actual } => CategoryError::VersionMismatch { expected, actual },
        })
    }

    fn decide(&self, command: CategoryCommand) -> Result<CategoryEvent, CategoryError> {
        match command {
            CategoryCommand::Create { id, name, slug, parent_id, description } => {
                if self.id.is_some() {
                    return Err(CategoryError::AlreadyExists(id));
                }
                let mut violations = Violations::default();
                let name = violations.check(CategoryName::parse(&name));
                let slug = violations.check(Slug::parse(&slug));
                if parent_id == Some(id) {
                    violations.push(self_parent());
                }
                let description = violations.check(Description::parse(description.as_deref().unwrap_or("")));
                violations.into_result().map_err(CategoryError::Invalid)?;
                // All Some here: every None pushed a violation above.
                Ok(CategoryEvent::CategoryCreated {
                    id,
                    name: name.unwrap().as_str().to_owned(),
                    slug: slug.unwrap().as_str().to_owned(),
                    parent_id,
                    description: description.unwrap().as_str().to_owned(),
                })
            }
            CategoryCommand::Update { expected_version, name, slug, description, parent } => {
                self.ensure_live(expected_version)?;
                let mut violations = Violations::default();
                if name.is_none() && slug.is_none() && description.is_none() && parent.is_none() {
                    violations.push(FieldViolation::new(
                        "body",
                        "empty_update",
                        "give at least one of name, slug, description, parent_id",
                    ));
                }
                let name = name.and_then(|n| violations.check(CategoryName::parse(&n)));
                let slug = slug.and_then(|s| violations.check(Slug::parse(&s)));
                let description = description.and_then(|d| violations.check(Description::parse(&d)));
                if parent.flatten().is_some_and(|p| Some(p) == self.id) {
                    violations.push(self_parent());
                }
                violations.into_result().map_err(CategoryError::Invalid)?;
                Ok(CategoryEvent::CategoryUpdated {
                    name: name.map(|n| n.as_str().to_owned()),
                    slug: slug.map(|s| s.as_str().to_owned()),
                    description: description.map(|d| d.as_str().to_owned()),
                    parent_id: parent,
                })
            }
            CategoryCommand::Delete { expected_version } => {
                self.ensure_live(expected_version)?;
                Ok(CategoryEvent::CategoryDeleted {})
            }
        }
    }
}

/// The one cycle a single category can see by itself. Longer cycles are the service's check.
fn self_parent() -> FieldViolation {
    FieldViolation::new("parent_id", "self_parent", "a category cannot be its own parent")
}

impl Aggregate for Category {
    const TYPE: &'static str = "Category";
    type Command = CategoryCommand;
    type Event = CategoryEvent;
    type Error = CategoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        match event {
            CategoryEvent::CategoryCreated { id, name, slug, parent_id, description } => {
                self.id = Some(id);
                self.name = name;
                self.slug = slug;
                self.parent_id = parent_id;
                self.description = description;
            }
            CategoryEvent::CategoryUpdated { name, slug, description, parent_id } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(slug) = slug {
                    self.slug = slug;
                }
                if let Some(description) = description {
                    self.description = description;
                }
                if let Some(parent_id) = parent_id {
                    self.parent_id = parent_id;
                }
            }
            CategoryEvent::CategoryDeleted {} => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;
    use serde_json::json;

    type CategoryTest = TestFramework<Category>;

    fn id() -> Uuid {
        Uuid::from_u128(0xC0FFEE)
    }

    fn parent() -> Uuid {
        Uuid::from_u128(0xBEEF)
    }

    fn created() -> CategoryEvent {
        CategoryEvent::CategoryCreated {
            id: id(),
            name: "Lamps".into(),
            slug: "lamps".into(),
            parent_id: Some(parent()),
            description: "Things that glow".into(),
        }
    }

    fn create() -> CategoryCommand {
        CategoryCommand::Create {
            id: id(),
            name: " Lamps ".into(),
            slug: "lamps".into(),
            parent_id: Some(parent()),
            description: Some("Things that glow".into()),
        }
    }

    fn update(parent: Option<Option<Uuid>>) -> CategoryCommand {
        CategoryCommand::Update { expected_version: None, name: None, slug: None, description: None, parent }
    }

    fn moved(parent_id: Option<Option<Uuid>>) -> CategoryEvent {
        CategoryEvent::CategoryUpdated { name: None, slug: None, description: None, parent_id }
    }

    fn violation_codes(error: CategoryError) -> Vec<(String, String)> {
        match error {
            CategoryError::Invalid(v) => v.0.into_iter().map(|v| (v.field, v.code)).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn creating_a_valid_category_records_it() {
        CategoryTest::with(()).given_no_previous_events().when(create()).then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_a_root_category_without_description_records_an_empty_one() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(CategoryCommand::Create {
                id: id(),
                name: "Lamps".into(),
                slug: "lamps".into(),
                parent_id: None,
                description: None,
            })
            .then_expect_events(vec![CategoryEvent::CategoryCreated {
                id: id(),
                name: "Lamps".into(),
                slug: "lamps".into(),
                parent_id: None,
                description: String::new(),
            }]);
    }

    #[test]
    fn creating_with_every_field_wrong_reports_every_field() {
        let error = CategoryTest::with(())
            .given_no_previous_events()
            .when(CategoryCommand::Create {
                id: id(),
                name: "".into(),
                slug: "Desk Lamps".into(),
                parent_id: Some(id()),
                description: Some("d".repeat(501)),
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(
            violation_codes(error),
            vec![
                ("name".into(), "required".into()),
                ("slug".into(), "invalid".into()),
                ("parent_id".into(), "self_parent".into()),
                ("description".into(), "too_long".into()),
            ]
        );
    }

    #[test]
    fn creating_an_existing_category_is_rejected() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(create())
            .then_expect_error(CategoryError::AlreadyExists(id()));
    }

    #[test]
    fn a_partial_update_records_only_the_given_fields() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Update {
                expected_version: Some(1),
                name: Some(" Desk lamps ".into()),
                slug: Some("desk-lamps".into()),
                description: None,
                parent: None,
            })
            .then_expect_events(vec![CategoryEvent::CategoryUpdated {
                name: Some("Desk lamps".into()),
                slug: Some("desk-lamps".into()),
                description: None,
                parent_id: None,
            }]);
    }

    #[test]
    fn moving_under_another_parent_or_to_the_root_is_recorded() {
        let other = Uuid::from_u128(0xD00D);
        CategoryTest::with(())
            .given(vec![created()])
            .when(update(Some(Some(other))))
            .then_expect_events(vec![moved(Some(Some(other)))]);
        CategoryTest::with(())
            .given(vec![created()])
            .when(update(Some(None)))
            .then_expect_events(vec![moved(Some(None))]);
    }

    #[test]
    fn a_category_cannot_be_moved_under_itself() {
        let error =
            CategoryTest::with(()).given(vec![created()]).when(update(Some(Some(id())))).inspect_result().unwrap_err();
        assert_eq!(violation_codes(error), vec![("parent_id".into(), "self_parent".into())]);
    }

    #[test]
    fn an_update_with_bad_fields_reports_each() {
        let error = CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Update {
                expected_version: None,
                name: Some(" ".into()),
                slug: Some("-".into()),
                description: Some("d".repeat(501)),
                parent: None,
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(
            violation_codes(error),
            vec![
                ("name".into(), "required".into()),
                ("slug".into(), "invalid".into()),
                ("description".into(), "too_long".into()),
            ]
        );
    }

    #[test]
    fn an_empty_update_is_rejected() {
        let error = CategoryTest::with(()).given(vec![created()]).when(update(None)).inspect_result().unwrap_err();
        assert_eq!(violation_codes(error), vec![("body".into(), "empty_update".into())]);
    }

    #[test]
    fn an_update_against_a_stale_version_is_rejected() {
        CategoryTest::with(())
            .given(vec![created(), moved(Some(None))])
            .when(CategoryCommand::Update {
                expected_version: Some(1),
                name: Some("Lights".into()),
                slug: None,
                description: None,
                parent: None,
            })
            .then_expect_error(CategoryError::VersionMismatch { expected: 1, actual: 2 });
    }

    #[test]
    fn commands_on_an_unknown_category_are_not_found() {
        CategoryTest::with(())
            .given_no_previous_events()
            .when(update(Some(None)))
            .then_expect_error(CategoryError::NotFound);
        CategoryTest::with(())
            .given_no_previous_events()
            .when(CategoryCommand::Delete { expected_version: None })
            .then_expect_error(CategoryError::NotFound);
    }

    #[test]
    fn deleting_records_it_once() {
        CategoryTest::with(())
            .given(vec![created()])
            .when(CategoryCommand::Delete { expected_version: Some(1) })
            .then_expect_events(vec![CategoryEvent::CategoryDeleted {}]);
        CategoryTest::with(())
            .given(vec![created(), CategoryEvent::CategoryDeleted {}])
            .when(CategoryCommand::Delete { expected_version: None })
            .then_expect_error(CategoryError::Deleted);
    }

    #[test]
    fn a_deleted_category_accepts_no_update_and_cannot_be_created_again() {
        CategoryTest::with(())
            .given(vec![created(), CategoryEvent::CategoryDeleted {}])
            .when(update(Some(None)))
            .then_expect_error(CategoryError::Deleted);
        CategoryTest::with(())
            .given(vec![created(), CategoryEvent::CategoryDeleted {}])
            .when(create())
            .then_expect_error(CategoryError::AlreadyExists(id()));
    }

    #[test]
    fn replaying_counts_the_version_and_applies_moves() {
        let category = Category::replay(vec![
            created(),
            moved(Some(None)),
            CategoryEvent::CategoryUpdated {
                name: Some("Lights".into()),
                slug: None,
                description: None,
                parent_id: None,
            },
        ]);
        assert_eq!(category.version, 3);
        assert_eq!(category.parent_id, None, "moved to the root, and a later update without parent kept it there");
        assert_eq!(category.name, "Lights");
        assert_eq!(category.slug, "lamps");
        assert_eq!(Category::TYPE, "Category");
    }

    #[test]
    fn updated_events_keep_the_three_states_of_parent_id_on_the_wire() {
        let other = Uuid::from_u128(0xD00D);
        for (event, wire) in [
            (moved(None), json!({"CategoryUpdated": {}})),
            (moved(Some(None)), json!({"CategoryUpdated": {"parent_id": null}})),
            (moved(Some(Some(other))), json!({"CategoryUpdated": {"parent_id": other.to_string()}})),
        ] {
            assert_eq!(serde_json::to_value(&event).unwrap(), wire);
            assert_eq!(serde_json::from_value::<CategoryEvent>(wire).unwrap(), event);
        }
        assert_eq!(created().event_type(), "CategoryCreated");
        assert_eq!(created().event_version(), "1.0.0");
    }
}
