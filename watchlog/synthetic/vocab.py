"""Vocabulary and behaviour tables of the synthetic learning platform.

Plain data, so a reader can see at a glance what the simulated world is made of.
"""

from __future__ import annotations

# Course languages and their catalogue shares (skewed, English-heavy like LinkedIn Learning),
# and the learners' main-language shares.
LANGUAGES = ("en", "es", "fr", "de", "pt", "ja")
COURSE_LANGUAGE_SHARES = (0.55, 0.14, 0.09, 0.09, 0.07, 0.06)
LEARNER_LANGUAGE_SHARES = (0.50, 0.16, 0.10, 0.10, 0.08, 0.06)
# P(a learner also speaks English) for non-English speakers; P(second language) for English speakers.
BILINGUAL_TO_ENGLISH = 0.35
ENGLISH_BILINGUAL = 0.08

# Topics (the course `category`), each with its skills and the industry that favours it.
TOPICS: dict[str, tuple[tuple[str, ...], str]] = {
    "Software Development": (
        ("Python", "Java", "JavaScript", "Git", "Unit Testing", "Algorithms", "C++", "Go"),
        "Technology",
    ),
    "Data Science": (
        (
            "SQL",
            "Statistics",
            "Machine Learning",
            "pandas",
            "Data Visualization",
            "R",
            "Deep Learning",
            "A/B Testing",
        ),
        "Technology",
    ),
    "Cloud and DevOps": (
        ("AWS", "Azure", "Kubernetes", "Docker", "Linux", "Terraform", "CI/CD", "Networking"),
        "Technology",
    ),
    "Security": (
        (
            "Cybersecurity",
            "Ethical Hacking",
            "Cryptography",
            "Incident Response",
            "Risk Management",
            "Cloud Security",
            "Identity Management",
            "Compliance",
        ),
        "Finance",
    ),
    "Design": (
        (
            "Figma",
            "Photoshop",
            "Illustrator",
            "UX Research",
            "Typography",
            "Prototyping",
            "Color Theory",
            "Motion Graphics",
        ),
        "Media",
    ),
    "Video and Audio": (
        (
            "Premiere Pro",
            "After Effects",
            "Audio Editing",
            "Podcasting",
            "Cinematography",
            "Color Grading",
            "Final Cut",
            "Lighting",
        ),
        "Media",
    ),
    "Marketing": (
        (
            "SEO",
            "Content Marketing",
            "Social Media",
            "Email Marketing",
            "Google Analytics",
            "Branding",
            "Copywriting",
            "Paid Ads",
        ),
        "Retail",
    ),
    "Sales": (
        (
            "Negotiation",
            "Prospecting",
            "CRM",
            "Account Management",
            "Sales Strategy",
            "Cold Calling",
            "Closing",
            "Customer Success",
        ),
        "Retail",
    ),
    "Leadership": (
        (
            "Team Management",
            "Coaching",
            "Strategic Thinking",
            "Delegation",
            "Change Management",
            "Decision Making",
            "Feedback",
            "Hiring",
        ),
        "Consulting",
    ),
    "Finance and Accounting": (
        (
            "Excel",
            "Financial Modeling",
            "Accounting",
            "Budgeting",
            "Valuation",
            "Tax",
            "Financial Reporting",
            "Forecasting",
        ),
        "Finance",
    ),
    "Project Management": (
        (
            "Agile",
            "Scrum",
            "PMP",
            "Kanban",
            "Risk Planning",
            "Stakeholder Management",
            "Jira",
            "Lean",
        ),
        "Consulting",
    ),
    "Personal Development": (
        (
            "Time Management",
            "Public Speaking",
            "Writing",
            "Productivity",
            "Resilience",
            "Networking Skills",
            "Career Planning",
            "Mindfulness",
        ),
        "Education",
    ),
}
INDUSTRIES = (
    "Technology",
    "Finance",
    "Media",
    "Retail",
    "Consulting",
    "Education",
    "Healthcare",
    "Manufacturing",
)

DIFFICULTIES = ("beginner", "intermediate", "advanced")
SENIORITIES = ("junior", "mid", "senior")

# Segment behaviour. share: of learners; sessions_per_month: visits while active;
# mean_active_days: expected active life; p_accidental: P(a click ends in a few-second watch);
# completion_bias / click_bias: logit shifts of watch completion / click-through;
# p_organic: expected organic (search/browse) watches per session; level_mean: seniority (0..2).
SEGMENTS: dict[str, dict[str, float]] = {
    "job_seeker": dict(
        share=0.15,
        sessions_per_month=3.0,
        mean_active_days=120,
        p_accidental=0.30,
        completion_bias=0.6,
        click_bias=0.3,
        p_organic=0.45,
        level_mean=1.0,
    ),
    "enterprise": dict(
        share=0.45,
        sessions_per_month=1.2,
        mean_active_days=420,
        p_accidental=0.40,
        completion_bias=0.0,
        click_bias=0.0,
        p_organic=0.25,
        level_mean=1.3,
    ),
    "student": dict(
        share=0.25,
        sessions_per_month=2.0,
        mean_active_days=200,
        p_accidental=0.35,
        completion_bias=-0.3,
        click_bias=0.2,
        p_organic=0.35,
        level_mean=0.4,
    ),
    "other": dict(
        share=0.15,
        sessions_per_month=0.6,
        mean_active_days=240,
        p_accidental=0.50,
        completion_bias=-0.6,
        click_bias=-0.3,
        p_organic=0.20,
        level_mean=1.0,
    ),
}

# Title templates per language: {skill} is filled in; the verbs make titles language-typed.
TITLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "Learning {skill}",
        "{skill} Essential Training",
        "Advanced {skill}",
        "{skill} for Beginners",
        "{skill} Tips and Tricks",
        "Mastering {skill}",
    ),
    "es": (
        "Aprende {skill}",
        "{skill}: formación esencial",
        "{skill} avanzado",
        "{skill} para principiantes",
        "Trucos de {skill}",
        "Domina {skill}",
    ),
    "fr": (
        "Apprendre {skill}",
        "{skill} : les fondamentaux",
        "{skill} avancé",
        "{skill} pour débutants",
        "Astuces {skill}",
        "Maîtriser {skill}",
    ),
    "de": (
        "{skill} lernen",
        "{skill} Grundkurs",
        "{skill} für Fortgeschrittene",
        "{skill} für Einsteiger",
        "{skill} Tipps und Tricks",
        "{skill} meistern",
    ),
    "pt": (
        "Aprenda {skill}",
        "{skill}: treinamento essencial",
        "{skill} avançado",
        "{skill} para iniciantes",
        "Dicas de {skill}",
        "Domine {skill}",
    ),
    "ja": (
        "{skill} 入門",
        "{skill} 基本講座",
        "{skill} 上級編",
        "はじめての {skill}",
        "{skill} のコツ",
        "{skill} 完全ガイド",
    ),
}
